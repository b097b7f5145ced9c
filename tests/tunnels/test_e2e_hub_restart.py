"""End to end: a server reached through the portal's tunnel agent stays reachable while its
JupyterHub restarts.

A real worker starts a real jupyterhub-singleuser; the Outpost is reached through the tunnel
agent, over a real sshd on a loopback port (the jump host). The Hub (hubclient) runs with its
proxy as a process of its own, as production deployments do: the proxy routes to the agent's
address, so while the Hub process is down the user's server still answers through the proxy.
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.support.jupyterhub import hub_process_start, hub_process_stop, running_jupyterhub
from tests.support.portal import LivePortal, local_outpost, portal_process_env, running_portal
from tests.support.processes import free_port, wait_until
from tests.support.sshd import sshd_start
from tests.support.tunnels import agent_start

# django_db only makes pytest-django create the test database; the portal's processes
# commit on their own (see tests/hubclient/test_e2e_hubclient.py).
pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

AGENT = "beside-the-hub"


@pytest.fixture(scope="module")
def jump_host(tmp_path_factory):
    sshd = sshd_start(tmp_path_factory.mktemp("sshd"))
    yield sshd
    sshd.proc.terminate()
    sshd.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def portal(tmp_path_factory, django_db_setup, django_db_blocker, jump_host):
    directory = tmp_path_factory.mktemp("portal")
    outpost = local_outpost("local", directory / "home")
    outpost["ssh"] = {
        "reach": "agent",
        "jump_host": jump_host.host,
        "jump_port": jump_host.port,
        "user": jump_host.user,
        "key_path": str(jump_host.key_path),
        "known_hosts": jump_host.known_hosts_line,
        "agent": AGENT,
    }
    with running_portal(
        directory,
        django_db_blocker=django_db_blocker,
        outposts=[outpost],
        hub_api_port=free_port(),
    ) as live:
        with django_db_blocker.unblock():
            env = portal_process_env(directory)
        agent = agent_start(directory, AGENT, env=env)
        try:
            yield live
        finally:
            agent.stop()


@pytest.fixture(scope="module")
def hub(portal: LivePortal, tmp_path_factory):
    config = f"""
c.JupyterHub.spawner_class = "outpost-portal"
c.OutpostPortalSpawner.hub_name = {portal.hub_name!r}
c.OutpostPortalSpawner.outposts = {{
    "local": {{"url": {portal.outpost_url("local")!r}, "secret_env": "OUTPOST_SECRET"}},
}}
c.OutpostPortalSpawner.default_outpost = "local"
c.OutpostPortalSpawner.events_poll_interval = 0.3
# Servers run at the portal, and the proxy on its own: a Hub restart must touch neither.
c.JupyterHub.cleanup_servers = False
c.JupyterHub.cleanup_proxy = False
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0.01}}
"""
    with running_jupyterhub(
        tmp_path_factory.mktemp("hub"),
        spawner_config=config,
        env={"OUTPOST_SECRET": portal.hub_secret},
        hub_port=portal.hub_api_port,
        external_proxy=True,
    ) as running:
        yield running


def jupyter_api_through_proxy(hub, user: str) -> dict | None:
    """jupyter-server's /api (its version; no login needed) of the user's server, asked
    through the Hub's proxy; None while it does not answer."""
    try:
        with urllib.request.urlopen(f"{hub.url}/user/{user}/api", timeout=5) as response:
            return json.loads(response.read()) if response.status == 200 else None
    except (OSError, ValueError):
        return None


def test_a_tunnelled_server_stays_reachable_through_the_proxy_while_the_hub_restarts(
    portal, hub, jump_host
):
    # given ann's server started through the Hub, on an Outpost reached through the agent
    assert hub.api("POST", "/users/ann")[0] == 201
    assert hub.api("POST", "/users/ann/server", {"outpost": "local", "flavor": "small"})[0] == 202
    events = hub.progress("ann")
    assert events[-1].get("ready") is True, events
    # then the Hub was given the agent's address, and the agent holds the tunnel through sshd
    from tunnels.models import Tunnel

    server = portal.server("ann")
    with portal.db_access():
        tunnel = Tunnel.objects.get(server_id=server["id"])
    assert server["address"].endswith(f"127.0.0.1:{tunnel.bind_port}"), server
    assert (tunnel.agent, tunnel.remote_host) == (AGENT, "127.0.0.1")
    assert tunnel.remote_port != tunnel.bind_port
    assert jump_host.connections(), "the agent has no SSH connection to the jump host"
    assert wait_until(lambda: jupyter_api_through_proxy(hub, "ann"), what="ann's server")

    # when the Hub process stops, the proxy and the agent staying up
    hub_process_stop(hub)
    try:
        # then ann's server still answers through the proxy and the tunnel
        assert hub.process.poll() is not None
        assert "version" in jupyter_api_through_proxy(hub, "ann")
    finally:
        # and once the Hub is back, it still knows the server as ready, reachable as before
        hub_process_start(hub)
    status, model = hub.api("GET", "/users/ann")
    assert status == 200 and model["servers"][""]["ready"] is True, model
    assert "version" in jupyter_api_through_proxy(hub, "ann")
    with portal.db_access():
        tunnel.refresh_from_db()
    assert (tunnel.state, tunnel.generation) == (Tunnel.State.OPEN, 1)

    assert hub.api("DELETE", "/users/ann/server")[0] in (202, 204)
    hub.wait_gone("ann")
