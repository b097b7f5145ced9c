"""Fixtures and helpers of the tests that drive the server lifecycle with real local servers
(registered by tests/outposts/conftest.py)."""

from __future__ import annotations

import pytest

from outposts import tasks
from outposts.models import Server
from tests.factories import ServerFactory
from tests.support.hub import FakeHub
from tests.support.spawners import serve_config


def hub_env(user: str, name: str) -> dict:
    """The env a Hub sends for ``user``'s server ``name``; no Hub listens at its URLs."""
    hub = FakeHub.__new__(FakeHub)
    hub.url = "http://127.0.0.1:9"  # nothing listens: Hub calls are not under test here
    return hub.env(user, name)


@pytest.fixture
def running(outpost, hub, home):
    """Start a real server of ``hub`` on ``outpost`` (slug "local") through the start task;
    stopped at teardown."""
    outpost.spawner_config = serve_config(home)
    outpost.save()
    started: list[Server] = []

    def start(name: str = "lab", **kwargs) -> Server:
        server = ServerFactory(
            hub=hub,
            outpost=outpost,
            name=name,
            start_id="s1",
            user_name="olga",
            status=Server.Status.REQUESTED,
            address="",
            env=hub_env("olga", name),
            **kwargs,
        )
        tasks.server_start_run_task(server.pk)
        server.refresh_from_db()
        assert server.status == Server.Status.RUNNING
        started.append(server)
        return server

    yield start
    for server in started:
        server.refresh_from_db()
        if server.is_active:
            tasks.server_stop_run_task(server.pk)


@pytest.fixture
def stopper():
    """Servers a test started; stopped at teardown if a test left one running."""
    ids: list[int] = []
    yield ids
    for server_id in ids:
        server = Server.objects.filter(pk=server_id).first()
        if server is not None and server.status == Server.Status.RUNNING:
            tasks.server_stop_run_task(server_id)
