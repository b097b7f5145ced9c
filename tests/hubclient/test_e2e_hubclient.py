"""End to end: a real JupyterHub with configurable-http-proxy, using the hubclient
(``spawner_class = "outpost-portal"``) against a real portal (uvicorn web and a Celery
worker on the test database), whose Outposts start real ``jupyterhub-singleuser`` servers.

Everything is driven as a Hub admin or a user would: the Hub's REST API, its progress
stream, and requests through the Hub's proxy. One portal and one Hub serve the whole module;
each test uses its own Hub user and stops what it started.
"""

from __future__ import annotations

import pytest

from tests.support.jupyterhub import restart_jupyterhub, running_jupyterhub
from tests.support.portal import LivePortal, local_outpost, running_portal
from tests.support.processes import alive, free_port

# django_db (not transactional) only makes pytest-django create the test database: the test's
# own transaction holds nothing, the portal's processes commit on their own connections, and
# reads here see their commits (READ COMMITTED). The module's rows are flushed at its end.
pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

# A start at the "queued" Outpost stays pending this long (a batch job waiting in a queue).
QUEUED_START_SECONDS = 60


@pytest.fixture(scope="module")
def portal(tmp_path_factory, django_db_setup, django_db_blocker):
    directory = tmp_path_factory.mktemp("portal")
    home = directory / "home"
    outposts = [
        local_outpost(
            "local",
            home,
            flavors=[
                {"name": "small", "display_name": "Small", "weight": 10, "max": 5},
                {"name": "closed", "display_name": "Closed for maintenance", "max": 0},
            ],
        ),
        local_outpost(
            "queued",
            home,
            spawner_class="tests.support.spawners.QueuedStartSpawner",
            start_delay=QUEUED_START_SECONDS,
        ),
    ]
    with running_portal(
        directory,
        django_db_blocker=django_db_blocker,
        outposts=outposts,
        hub_api_port=free_port(),
    ) as live:
        yield live


def hubclient_config(portal: LivePortal) -> str:
    """The Hub's spawner configuration, as docs/hub-configuration.md describes it."""
    return f"""
c.JupyterHub.spawner_class = "outpost-portal"
c.OutpostPortalSpawner.hub_name = {portal.hub_name!r}
c.OutpostPortalSpawner.outposts = {{
    "local": {{"url": {portal.outpost_url("local")!r}, "secret_env": "OUTPOST_SECRET"}},
    "queued": {{"url": {portal.outpost_url("queued")!r}, "secret_env": "OUTPOST_SECRET"}},
}}
c.OutpostPortalSpawner.default_outpost = "local"
c.OutpostPortalSpawner.events_poll_interval = 0.3
c.OutpostPortalSpawner.retry_backoff = 0.2
# Servers run at the portal, not under the Hub: a Hub restart must not stop them.
c.JupyterHub.cleanup_servers = False
# The REST API answers 202 at once, so the tests can follow the progress stream.
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0.01}}
"""


@pytest.fixture(scope="module")
def hub(portal, tmp_path_factory):
    directory = tmp_path_factory.mktemp("hub")
    with running_jupyterhub(
        directory,
        spawner_config=hubclient_config(portal),
        env={"OUTPOST_SECRET": portal.hub_secret},
        hub_port=portal.hub_api_port,
    ) as running:
        yield running


def start_server(hub, user: str, options: dict, server: str = "") -> int:
    status, _ = hub.api("POST", f"/users/{user}")
    assert status == 201
    path = f"/users/{user}/servers/{server}" if server else f"/users/{user}/server"
    status, body = hub.api("POST", path, options)
    return status


def test_a_server_starts_shows_progress_answers_through_the_proxy_and_stops(hub, portal):
    # when alice's server is started through the Hub's REST API
    assert start_server(hub, "alice", {"outpost": "local", "flavor": "small"}) == 202

    # then the Hub's progress stream (what the spawn page shows) carries the portal's steps
    events = hub.progress("alice")
    messages = [event.get("message", "") for event in events]
    assert "Start request accepted." in messages, messages
    assert "Starting the server." in messages, messages
    assert events[-1].get("ready") is True, events

    # and the server answers through the Hub's proxy at the address the portal reported
    model = hub.wait_for_server("alice")
    assert model["url"] == "/user/alice/"
    status, body = hub.request("GET", f"{hub.url}/user/alice/api/status")
    assert status == 200, body
    assert "started" in body
    row = portal.server("alice")
    assert row["status"] == "running"
    assert row["flavor"] == "small"
    host, port = row["address"].split(":")
    assert host == "127.0.0.1"
    pid = row["state"]["pid"]
    assert alive(pid)
    portal.remember_server_processes()

    # when the user's server is stopped through the Hub
    status, _ = hub.api("DELETE", "/users/alice/server")
    assert status in (202, 204)
    hub.wait_gone("alice")

    # then the process is gone, the portal records the stop, and the proxy has no route
    hub.wait_for(lambda: not alive(pid), timeout=30, what="the server process to exit")
    hub.wait_for(
        lambda: portal.server("alice")["status"] == "stopped",
        timeout=30,
        what="the portal to record the stop",
    )
    assert portal.server("alice")["removed"] is True
    status, _ = hub.request("GET", f"{hub.url}/user/alice/api/status")
    assert status != 200


def test_a_refused_flavor_reaches_the_user_as_a_failed_spawn_with_the_portals_message(hub, portal):
    # when bob asks for a flavor the portal has closed (max: 0)
    start_server(hub, "bob", {"outpost": "local", "flavor": "closed"})

    # then the spawn fails, and the Hub shows the portal's own message
    events = hub.progress("bob")
    assert events[-1]["failed"] is True, events
    message = events[-1]["message"]
    assert "Start with closed for e2e-hub not allowed. Maximum (0) already reached." in message
    hub.wait_gone("bob")
    # and no server was admitted at the portal
    assert portal.servers("bob") == []


def test_an_unknown_flavor_is_refused_with_the_allowed_ones(hub, portal):
    start_server(hub, "bea", {"outpost": "local", "flavor": "huge"})

    events = hub.progress("bea")

    assert events[-1]["failed"] is True, events
    assert (
        "Start with flavor huge not allowed. Allowed values for user: ['closed', 'small']"
        in events[-1]["message"]
    )
    assert portal.servers("bea") == []


def test_an_unknown_system_is_refused_by_the_hub_before_anything_starts(hub, portal):
    assert hub.api("POST", "/users/uli")[0] == 201

    status, body = hub.api("POST", "/users/uli/server", {"outpost": "nowhere"})

    assert status == 400
    assert "Unknown system 'nowhere'. Known systems: local, queued." in body["message"]
    assert portal.servers("uli") == []


def test_cancel_during_a_pending_start_leaves_no_process(hub, portal):
    # given carol's start on an Outpost whose starts stay pending (queued batch job) ...
    assert start_server(hub, "carol", {"outpost": "queued", "flavor": "small"}) == 202
    pid_file = portal.directory / "home" / "carol" / "started.pid"
    hub.wait_for(pid_file.exists, timeout=30, what="the queued start to launch its process")
    pid = int(pid_file.read_text())
    assert alive(pid)
    status, model = hub.api("GET", "/users/carol")
    assert model["servers"][""]["pending"] == "spawn"
    assert portal.server("carol")["status"] == "pending"
    portal.remember_server_processes()

    # when the pending start is cancelled through the Hub (the spawn page's Cancel)
    status, _ = hub.api("DELETE", "/users/carol/server")
    assert status in (202, 204)

    # then the Hub forgets it, the process is gone and the portal records the stop
    hub.wait_gone("carol")
    hub.wait_for(lambda: not alive(pid), timeout=30, what="the cancelled start's process to end")
    hub.wait_for(
        lambda: portal.server("carol")["status"] == "stopped",
        timeout=30,
        what="the portal to record the cancelled start",
    )


def test_after_a_hub_restart_the_server_is_still_reachable(hub, portal):
    # given dave's running named server
    start_server(hub, "dave", {"outpost": "local", "flavor": "small"}, server="lab")
    hub.wait_for_server("dave", "lab")
    status, _ = hub.request("GET", f"{hub.url}/user/dave/lab/api/status")
    assert status == 200
    pid = portal.server("dave", "lab")["state"]["pid"]
    portal.remember_server_processes()

    # when the JupyterHub process restarts (same database and cookie secret; new proxy)
    restart_jupyterhub(hub)

    # then the Hub still knows the server, and it answers through the new proxy
    model = hub.wait_for_server("dave", "lab")
    assert model["ready"] is True
    status, body = hub.request("GET", f"{hub.url}/user/dave/lab/api/status")
    assert status == 200, body
    assert alive(pid)

    # and it can still be stopped through the Hub
    status, _ = hub.api("DELETE", "/users/dave/servers/lab")
    assert status in (202, 204)
    hub.wait_gone("dave", "lab")
    hub.wait_for(lambda: not alive(pid), timeout=30, what="dave's server process to exit")
