"""End to end: a real JupyterHub using the public ``jupyterhub-outpostspawner`` package,
unchanged, against the real portal (uvicorn web, Celery worker and beat), which starts real
``jupyterhub-singleuser`` servers: the portal is a drop-in Outpost (api-contract.md).

The stock spawner is configured only as docs/hub-configuration.md tells a Hub's admin:
``request_url`` and Basic auth ``request_headers``. It needs no tunnel here: the portal
answers a synchronous start with ``host:port``, and with ``ssh_during_startup`` off (its
default) ForwardBaseSpawner proxies straight to that address.
"""

from __future__ import annotations

import os
import signal

import pytest

from tests.support.jupyterhub import running_jupyterhub
from tests.support.portal import LivePortal, local_outpost, running_portal
from tests.support.processes import alive, free_port

# django_db only makes pytest-django create the test database (see test_e2e_hubclient.py).
pytestmark = [pytest.mark.e2e, pytest.mark.django_db]


@pytest.fixture(scope="module")
def portal(tmp_path_factory, django_db_setup, django_db_blocker):
    directory = tmp_path_factory.mktemp("portal")
    outposts = [local_outpost("local", directory / "home")]
    with running_portal(
        directory,
        django_db_blocker=django_db_blocker,
        outposts=outposts,
        hub_api_port=free_port(),
    ) as live:
        yield live


def stock_spawner_config(portal: LivePortal) -> str:
    return f"""
import base64, os

c.JupyterHub.spawner_class = "outpostspawner.OutpostSpawner"
c.OutpostSpawner.request_url = {portal.outpost_url("local") + "services"!r}
_auth = base64.b64encode(f"{portal.hub_name}:{{os.environ['OUTPOST_SECRET']}}".encode()).decode()
c.OutpostSpawner.request_headers = {{
    "Content-Type": "application/json",
    "Accept": "application/json",
    "Authorization": f"Basic {{_auth}}",
}}
# Poll the portal every second (milliseconds here) instead of every 30 s.
c.OutpostSpawner.custom_poll_interval = 1000
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0.01}}
"""


@pytest.fixture(scope="module")
def hub(portal, tmp_path_factory):
    with running_jupyterhub(
        tmp_path_factory.mktemp("hub"),
        spawner_config=stock_spawner_config(portal),
        env={"OUTPOST_SECRET": portal.hub_secret},
        hub_port=portal.hub_api_port,
    ) as running:
        yield running


def server_path(user: str, server: str) -> str:
    return f"/users/{user}/servers/{server}" if server else f"/users/{user}/server"


def user_url(hub, user: str, server: str) -> str:
    return f"{hub.url}/user/{user}/{server + '/' if server else ''}api/status"


@pytest.mark.parametrize("server", ["", "lab"], ids=["default-server", "named-server"])
def test_start_poll_and_stop_through_the_stock_spawner(hub, portal, server):
    user = f"sam-{server or 'default'}"
    # when a server is started through the Hub's REST API with a flavor
    assert hub.api("POST", f"/users/{user}")[0] == 201
    status, _ = hub.api("POST", server_path(user, server), {"flavor": "small"})
    assert status in (201, 202)

    # then the Hub's progress stream shows the portal's events (POSTed to the Hub's events URL)
    events = hub.progress(user, server)
    messages = [event.get("message", "") for event in events]
    assert events[-1].get("ready") is True, events
    assert "Outpost communication successful. Waiting for the service to start..." in messages
    assert "Starting the server." in messages, messages

    # and the server answers through the proxy, at the address the portal returned
    model = hub.wait_for_server(user, server)
    status, body = hub.request("GET", user_url(hub, user, server))
    assert status == 200, body
    row = portal.server(user, server)
    assert row["status"] == "running"
    assert row["flavor"] == "small"
    # the Hub keeps the portal's start_id in its spawner state: polls and stops name it
    assert model["state"]["start_id"] == row["start_id"]
    pid = row["state"]["pid"]
    portal.remember_server_processes()

    # when it is stopped through the Hub
    status, _ = hub.api("DELETE", server_path(user, server))
    assert status in (202, 204)

    # then it is gone everywhere: Hub, proxy, process, portal
    hub.wait_gone(user, server)
    hub.wait_for(lambda: not alive(pid), timeout=30, what="the server process to exit")
    hub.wait_for(
        lambda: portal.server(user, server)["status"] == "stopped",
        timeout=30,
        what="the portal to record the stop",
    )
    assert hub.request("GET", user_url(hub, user, server))[0] != 200


def test_a_server_that_exits_is_noticed_by_the_hubs_poll(hub, portal):
    # given a running default server
    assert hub.api("POST", "/users/tess")[0] == 201
    hub.api("POST", "/users/tess/server", {"flavor": "small"})
    hub.wait_for_server("tess")
    pid = portal.server("tess")["state"]["pid"]
    portal.remember_server_processes()

    # when the server process ends on the remote system (not through the Hub)
    os.kill(pid, signal.SIGTERM)

    # then the portal's reconciler records the exit, the Hub's poll sees it, and the Hub
    # drops the server
    hub.wait_for(
        lambda: portal.server("tess")["status"] == "stopped",
        timeout=30,
        what="the portal to notice the exit",
    )
    hub.wait_gone("tess", "")
