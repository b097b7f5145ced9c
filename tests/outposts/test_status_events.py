"""A waiting synchronous start or stop is woken by the worker's announcement over Redis,
falls back to re-reading with other brokers, and an announcement that cannot be sent never
fails the status change it announces."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from asgiref.sync import async_to_sync
from django.db import connections

from outposts import status_events
from outposts.api.views import wait_for_status
from outposts.lifecycle.end import server_mark_stopped
from outposts.models import Server
from tests.factories import ServerFactory

pytestmark = pytest.mark.django_db(transaction=True)

# Far longer than DEADLINE: an answer within it came from a wake-up or the 0.25 s poll.
LONG_RECHECK = 30
DEADLINE = 10


def in_thread(action) -> threading.Thread:
    """Run ``action`` soon in another thread with its own connection, as a worker would."""

    def run() -> None:
        try:
            time.sleep(0.3)  # the wait has subscribed and read by now
            action()
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def wait_ended(server: Server):
    """The wait's answer, which must come within DEADLINE though the wait may go on longer:
    an answer from the last re-read at the wait's own bound would prove nothing."""

    def wait() -> tuple[str, str, str] | None:
        try:
            return async_to_sync(wait_for_status)(
                server.pk, until=Server.ENDED, timeout=2 * LONG_RECHECK
            )
        finally:
            connections.close_all()  # the ORM read in this thread

    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(wait)
        return answer.result(timeout=DEADLINE)


def ended_unannounced_behind_a_wait() -> str | None:
    """The status a wait answers for a running server that ends by a plain update while it
    waits (nobody announces it)."""
    server = ServerFactory(status=Server.Status.RUNNING)
    worker = in_thread(
        lambda: Server.objects.filter(pk=server.pk).update(status=Server.Status.STOPPED)
    )
    row = wait_ended(server)
    worker.join()
    return None if row is None else row[0]


def test_a_wait_is_woken_by_the_status_change_not_the_safety_re_read(settings):
    settings.SYNC_WAIT_RECHECK_SECONDS = LONG_RECHECK
    server = ServerFactory(status=Server.Status.RUNNING)
    worker = in_thread(lambda: server_mark_stopped(server_id=server.pk, exit_code=0))
    row = wait_ended(server)
    worker.join()
    # Without the wake-up the first re-read would come after 30 s, past the 10 s bound.
    assert row is not None and row[0] == Server.Status.STOPPED


def test_with_a_broker_that_is_not_redis_a_wait_polls(settings):
    settings.CELERY_BROKER_URL = "memory://"
    settings.SYNC_WAIT_RECHECK_SECONDS = LONG_RECHECK
    # a change nobody announces (a plain update)
    assert ended_unannounced_behind_a_wait() == Server.Status.STOPPED


def test_a_failed_announcement_does_not_fail_the_status_change(settings, monkeypatch, caplog):
    # given a Redis that is not there (nothing listens on port 1)
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    monkeypatch.setattr(status_events, "_publisher", None)
    server = ServerFactory(status=Server.Status.RUNNING)
    # when the server ends
    with caplog.at_level(logging.WARNING, logger="outposts.status_events"):
        server_mark_stopped(server_id=server.pk, exit_code=0)
    # then it has ended all the same, and the log says the announcement was lost
    assert Server.objects.get(pk=server.pk).status == Server.Status.STOPPED
    assert "Could not announce server" in caplog.text


def test_a_wait_without_redis_still_answers(settings):
    # a Redis broker that is down: the wait falls back to polling
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    assert ended_unannounced_behind_a_wait() == Server.Status.STOPPED
