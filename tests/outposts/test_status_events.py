"""A waiting synchronous start or stop is woken by the worker's announcement over Redis,
falls back to re-reading with other brokers, and an announcement that cannot be sent never
fails the status change it announces."""

from __future__ import annotations

import asyncio
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


def in_a_loop_of_its_own(waits, *, deadline: float = DEADLINE):
    """What ``waits()`` returns, run in an event loop of a thread of its own (as a web
    process's), which must come within ``deadline`` though the waits may go on longer: an
    answer from the last re-read at a wait's own bound would prove nothing."""

    def run():
        try:
            return async_to_sync(waits)()
        finally:
            connections.close_all()  # the ORM reads in this thread

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result(timeout=deadline)


def waited_for_end(server: Server):
    """A wait for ``server``'s end, bounded far past DEADLINE."""
    return wait_for_status(server.pk, until=Server.ENDED, timeout=2 * LONG_RECHECK)


def wait_ended(server: Server):
    """The wait's answer, within DEADLINE."""

    async def wait():
        return await waited_for_end(server)

    return in_a_loop_of_its_own(wait)


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


def waits_one_after_another(servers: list[Server], *, between=None) -> tuple[list, list]:
    """Each server's wait for its end in one event loop, one after another, each ended by a
    worker's announcement; the answers, and the loop's idle connections after each wait.
    ``between(idle)`` runs in the loop after each wait but the last."""

    async def waits() -> tuple[list, list]:
        loop = asyncio.get_running_loop()
        answers, idle_after = [], []
        for server in servers:
            worker = in_thread(
                lambda server=server: server_mark_stopped(server_id=server.pk, exit_code=0)
            )
            row = await waited_for_end(server)
            answers.append(None if row is None else row[0])
            worker.join()
            idle = status_events._idle_subscribers[loop]
            idle_after.append(list(idle))
            if between is not None and server is not servers[-1]:
                await between(idle)
        return answers, idle_after

    # Each wait must be woken within DEADLINE: its first re-read comes after 30 s.
    return in_a_loop_of_its_own(waits, deadline=len(servers) * DEADLINE)


def test_waits_in_one_event_loop_take_turns_on_one_redis_connection(settings):
    settings.SYNC_WAIT_RECHECK_SECONDS = LONG_RECHECK
    servers = [ServerFactory(status=Server.Status.RUNNING) for _ in range(3)]
    # when three waits run one after another in one loop (one web process's)
    answers, idle_after = waits_one_after_another(servers)
    # then each is woken by its own server's end, and all three used one connection
    assert answers == [Server.Status.STOPPED] * 3
    [first] = idle_after[0]
    assert all(idle == [first] for idle in idle_after)


def test_a_wait_on_a_connection_that_broke_while_idle_is_still_woken(settings):
    settings.SYNC_WAIT_RECHECK_SECONDS = LONG_RECHECK
    servers = [ServerFactory(status=Server.Status.RUNNING) for _ in range(2)]

    async def break_idle_connection(idle) -> None:
        await idle[0].connection.disconnect()

    # when the first wait's connection breaks (Redis restarted) before the second wait
    answers, _ = waits_one_after_another(servers, between=break_idle_connection)
    # then the second wait is woken all the same
    assert answers == [Server.Status.STOPPED] * 2


def test_a_loop_keeps_at_most_a_few_idle_connections_after_many_waits_at_once(settings):
    settings.SYNC_WAIT_RECHECK_SECONDS = LONG_RECHECK
    kept = status_events.IDLE_SUBSCRIBERS_KEPT
    servers = [ServerFactory(status=Server.Status.RUNNING) for _ in range(kept + 3)]

    async def waits_at_once() -> tuple[list, int]:
        worker = in_thread(
            lambda: [server_mark_stopped(server_id=server.pk, exit_code=0) for server in servers]
        )
        rows = await asyncio.gather(*(waited_for_end(server) for server in servers))
        worker.join()
        idle = status_events._idle_subscribers[asyncio.get_running_loop()]
        return [row[0] for row in rows], len({id(pubsub) for pubsub in idle})

    # when more waits than it keeps run at once in one loop, each woken by its server's end
    statuses, idle = in_a_loop_of_its_own(waits_at_once)
    # then each was answered, and the loop keeps only so many connections for the next
    assert statuses == [Server.Status.STOPPED] * len(servers)
    assert idle == kept
