"""Synchronous starts and stops wait for their outcome, within a bound, holding no thread.

No Celery worker runs here: a helper thread plays the worker by moving the server's status
in the database, as the start and stop tasks do. Tests are transactional so that thread (its
own connection) and the request see each other's writes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
import requests
import uvicorn
from asgiref.sync import async_to_sync
from django.db import connections
from django.test import AsyncClient

from outposts.models import Server
from tests.support.api import basic_auth, send, start_body
from tests.support.processes import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

SERVICES = "/outposts/local/services"


class Worker(threading.Thread):
    """Once a server matching ``ready`` exists, applies ``update`` to it, like a task would."""

    def __init__(self, ready: Callable[[], bool], **update: object) -> None:
        super().__init__(daemon=True)
        self.ready, self.update_fields = ready, update
        self.done_at: float | None = None

    def run(self) -> None:
        try:
            deadline = time.monotonic() + 10
            while not self.ready() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)  # the request is waiting by now
            self.done_at = time.monotonic()
            Server.objects.update(**self.update_fields)
        finally:
            connections.close_all()


def started() -> bool:
    return Server.objects.exists()


def stop_asked() -> bool:
    return Server.objects.filter(stop_requested_at__isnull=False).exists()


@pytest.fixture
def long_wait(settings):
    settings.SYNC_WAIT_TIMEOUT = 20
    return settings


def test_sync_start_answers_the_address_once_the_server_runs(hub_client, outpost, long_wait):
    # given a worker that brings the server up
    worker = Worker(started, status=Server.Status.RUNNING, address="10.0.0.5:8888")
    worker.start()
    # when a stock Hub starts a server and waits
    response = send(hub_client, "POST", SERVICES, start_body())
    answered_at = time.monotonic()
    worker.join()
    # then it gets the address, after the server ran
    assert response.status_code == 200
    assert response.json() == {"service": "10.0.0.5:8888"}
    assert worker.done_at is not None and answered_at >= worker.done_at


def test_sync_start_answers_419_when_the_start_fails(hub_client, outpost, long_wait):
    worker = Worker(started, status=Server.Status.FAILED, error="lab - No node has 8 GPUs.")
    worker.start()
    response = send(hub_client, "POST", SERVICES, start_body())
    worker.join()
    assert response.status_code == 419
    assert response.json() == {
        "module": "outposts.errors",
        "class": "SpawnerFailed",
        "traceback": "",
        "args": ["lab - No node has 8 GPUs."],
        "kwargs": {},
        "detail": "lab - No node has 8 GPUs.",
    }


def test_sync_start_past_the_bound_answers_an_empty_service(hub_client, outpost, settings):
    # given a start nobody carries out, and a short bound
    settings.SYNC_WAIT_TIMEOUT = 0.3
    # when a Hub starts and waits
    response = send(hub_client, "POST", SERVICES, start_body())
    # then it is told the address comes later, and the portal remembers to send it
    assert response.status_code == 200
    assert response.json() == {"service": ""}
    assert Server.objects.get().address_via_callback is True


def test_an_error_while_waiting_answers_the_json_error_shape(
    hub_client, outpost, long_wait, monkeypatch, caplog
):
    # given a wait that fails in a way nobody planned for (e.g. the database goes away)
    async def broken_wait(*args, **kwargs):
        raise RuntimeError("connection to db-internal.example:5432 failed")

    monkeypatch.setattr("outposts.api.views.wait_for_status", broken_wait)
    # when a Hub starts and stops synchronously
    with caplog.at_level(logging.ERROR):
        started_ = send(hub_client, "POST", SERVICES, start_body())
        stopped = send(hub_client, "DELETE", SERVICES + "/lab/s1")
    # then both get the contract's JSON error shape, without internals; the log has them
    for response in (started_, stopped):
        assert response.status_code == 500
        assert response["Content-Type"] == "application/json"
        body = response.json()
        assert (body["class"], body["traceback"]) == ("InternalError", "")
        assert "db-internal" not in response.content.decode()
    assert "db-internal.example" in caplog.text


def test_sync_start_never_waits_longer_than_the_outposts_start_timeout(
    hub_client, outpost, long_wait
):
    outpost.start_timeout = timedelta(seconds=0.2)
    outpost.save()
    began = time.monotonic()
    response = send(hub_client, "POST", SERVICES, start_body())
    assert response.json() == {"service": ""}
    assert time.monotonic() - began < long_wait.SYNC_WAIT_TIMEOUT / 2


def test_sync_stop_answers_once_the_server_stopped(hub_client, hub, outpost, long_wait):
    # given a running server and a worker that stops it when asked
    Server.objects.create(
        hub=hub,
        outpost=outpost,
        name="",
        start_id="s1",
        user_id="1",
        user_name="u",
        status=Server.Status.RUNNING,
    )
    worker = Worker(stop_asked, status=Server.Status.STOPPED, exit_code=0)
    worker.start()
    # when the Hub deletes it and waits
    response = hub_client.delete(SERVICES + "//s1")
    answered_at = time.monotonic()
    worker.join()
    # then the answer comes once it stopped
    assert response.status_code == 200
    assert response.json() == {"logs": []}
    assert worker.done_at is not None and answered_at >= worker.done_at
    assert Server.objects.get().status == Server.Status.STOPPED


def test_the_asgi_path_waits_for_the_outcome(outpost, hub, long_wait):
    # given a worker that brings the server up
    worker = Worker(started, status=Server.Status.RUNNING, address="10.0.0.6:8888")
    worker.start()
    # when the start comes through Django's ASGI handler
    response = async_to_sync(AsyncClient().post)(
        SERVICES,
        start_body(),
        content_type="application/json",
        headers={"Authorization": basic_auth(hub.name)},
    )
    worker.join()
    # then it waited for the address
    assert response.status_code == 200
    assert response.json() == {"service": "10.0.0.6:8888"}


@pytest.fixture
def uvicorn_url(monkeypatch):
    """The portal served by a real uvicorn, as in production (portal/asgi.py)."""
    from portal.asgi import application

    # Each request closes its connection, so none is left open on the test database.
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 0)
    server = uvicorn.Server(
        uvicorn.Config(application, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=30, what="uvicorn to listen", every=0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_a_waiting_start_does_not_hold_up_other_requests(uvicorn_url, hub, outpost, settings):
    # given a synchronous start that will wait a while for a worker that never comes
    settings.SYNC_WAIT_TIMEOUT = 2
    auth = {"Authorization": basic_auth(hub.name)}
    waiting: dict[str, requests.Response] = {}

    def start() -> None:
        waiting["start"] = requests.post(
            f"{uvicorn_url}{SERVICES}", json=start_body(), headers=auth, timeout=30
        )

    starter = threading.Thread(target=start)
    starter.start()
    deadline = time.monotonic() + 10
    while not Server.objects.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    # when the same Hub polls and lists meanwhile
    poll = requests.get(f"{uvicorn_url}{SERVICES}/lab/s1", headers=auth, timeout=30)
    listed = requests.get(f"{uvicorn_url}{SERVICES}/", headers=auth, timeout=30)
    # then both are answered while the start is still waiting
    assert starter.is_alive()
    assert poll.status_code == 200 and poll.json() == {"status": None, "logs": []}
    assert [item["name"] for item in listed.json()] == ["lab"]
    starter.join()
    assert waiting["start"].status_code == 200
    assert waiting["start"].json() == {"service": ""}
