"""The tunnel agent end to end: a real ``run_tunnel_agent`` process, a real sshd as the jump
host (tests/support/sshd.py) and plain HTTP servers on loopback ports as the servers on a
node; the Hub's side is a plain HTTP client at the address the Hub is given."""

from __future__ import annotations

import pytest

from outposts.models import Server
from tests.factories import OutpostFactory, OutpostSSHFactory, ServerFactory
from tests.support.processes import free_port, wait_until
from tests.support.tunnels import page_through
from tunnels.models import Tunnel
from tunnels.services import tunnel_open_for_server, tunnel_restart_for_node

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def agent_outpost(sshd, *, agent="agent-a", slug=None):
    """An Outpost whose servers are reached through ``agent``, with sshd as its jump host."""
    outpost = OutpostFactory(**({"slug": slug} if slug else {}))
    OutpostSSHFactory(
        outpost=outpost,
        jump_host=sshd.host,
        jump_port=sshd.port,
        user=sshd.user,
        key_path=str(sshd.key_path),
        known_hosts=sshd.known_hosts_line + "\n",
        agent=agent,
    )
    return outpost


def tunnelled_server(outpost, settings, *, remote):
    """A running server at ``remote`` (host:port) with its tunnel; returns the server and
    the address the Hub was given. The bind port is one free right now."""
    server = ServerFactory(outpost=outpost, address=remote)
    port = free_port()
    settings.TUNNEL_BIND_PORTS = f"{port}-{port}"
    address = tunnel_open_for_server(server=server, address=remote)
    Server.objects.filter(pk=server.pk).update(address=address)
    return server, address


def reachable(address, text, *, timeout=30, agent=None):
    return wait_until(
        lambda: page_through(address) == text,
        timeout=timeout,
        what=f"{text!r} at {address}",
        details=(agent.log if agent else lambda: ""),
    )


@pytest.mark.parametrize("in_worker", [False, True], ids=["own-process", "worker-thread"])
def test_a_server_is_reached_through_the_tunnel_the_agent_opened(
    sshd, web_server, agent_runner, settings, in_worker
):
    # given a server on a node, and the address the Hub was given for it
    node_server = web_server("hello from the node")
    outpost = agent_outpost(sshd)
    server, address = tunnelled_server(outpost, settings, remote=f"127.0.0.1:{node_server.port}")
    assert address != f"127.0.0.1:{node_server.port}"
    assert page_through(address) is None  # nothing listens there before the agent
    # when the agent runs, as its own process or in a worker's thread (runportal's)
    agent = agent_runner("agent-a", in_worker=in_worker)
    # then the Hub reaches the server at its address, through sshd
    reachable(address, "hello from the node", agent=agent)
    tunnel = Tunnel.objects.get(server=server)
    assert tunnel.state == Tunnel.State.OPEN
    assert tunnel.opened_generation == tunnel.generation == 1
    assert tunnel.last_check_at is not None and tunnel.last_error == ""
    assert sshd.connections(), "the forward goes through the test's sshd"
    # and once the agent stops, so does its forward
    agent.stop()
    assert page_through(address) is None


def test_a_dropped_ssh_connection_is_noticed_and_the_tunnel_is_back_within_seconds(
    sshd, web_server, agent_runner, settings
):
    # given an open tunnel
    node_server = web_server("still here")
    server, address = tunnelled_server(
        agent_outpost(sshd), settings, remote=f"127.0.0.1:{node_server.port}"
    )
    agent = agent_runner("agent-a")
    reachable(address, "still here", agent=agent)
    opened_at = Tunnel.objects.get(server=server).opened_at
    # when the sshd serving the agent's connection is killed
    killed = sshd.kill_connections()
    assert killed
    # then the agent notices, opens it again over a new connection, and the server answers
    wait_until(
        lambda: Tunnel.objects.get(server=server).opened_at != opened_at,
        timeout=15,
        what="the tunnel to be re-opened",
        details=agent.log,
    )
    reachable(address, "still here", timeout=15, agent=agent)
    assert sshd.connections() - killed
    assert "dropped" in agent.log()


def test_restarting_the_agent_restores_all_its_tunnels_and_only_its_own(
    sshd, web_server, agent_runner, settings
):
    # given two servers tunnelled by agent A and one by agent B
    first, second, other = web_server("one"), web_server("two"), web_server("other")
    outpost = agent_outpost(sshd, agent="agent-a")
    _, first_address = tunnelled_server(outpost, settings, remote=f"127.0.0.1:{first.port}")
    _, second_address = tunnelled_server(outpost, settings, remote=f"127.0.0.1:{second.port}")
    other_server, other_address = tunnelled_server(
        agent_outpost(sshd, agent="agent-b"), settings, remote=f"127.0.0.1:{other.port}"
    )
    agent = agent_runner("agent-a")
    reachable(first_address, "one", agent=agent)
    reachable(second_address, "two", agent=agent)
    # agent B does not run: its tunnel is not agent A's to open
    assert page_through(other_address) is None
    assert Tunnel.objects.get(server=other_server).state == Tunnel.State.PENDING
    # when agent A stops, then starts again
    agent.stop()
    assert page_through(first_address) is None and page_through(second_address) is None
    agent = agent_runner("agent-a")
    # then both its tunnels are back
    reachable(first_address, "one", agent=agent)
    reachable(second_address, "two", agent=agent)


def test_restart_by_node_re_creates_exactly_the_tunnels_to_that_node(
    sshd, web_server, agent_runner, settings
):
    # given tunnels to two nodes ("127.0.0.1" and "localhost": both this machine for sshd)
    here, there = web_server("here"), web_server("there")
    outpost = agent_outpost(sshd)
    kept, kept_address = tunnelled_server(outpost, settings, remote=f"127.0.0.1:{here.port}")
    restarted, restarted_address = tunnelled_server(
        outpost, settings, remote=f"localhost:{there.port}"
    )
    agent = agent_runner("agent-a")
    reachable(kept_address, "here", agent=agent)
    reachable(restarted_address, "there", agent=agent)
    before = {t.server_id: t.opened_at for t in Tunnel.objects.all()}
    # when the tunnels to node "localhost" are restarted
    assert tunnel_restart_for_node(node="localhost") == 1
    # then the agent re-creates that one (generation 2), and leaves the other alone
    wait_until(
        lambda: Tunnel.objects.get(server=restarted).opened_generation == 2,
        timeout=15,
        what="the restarted tunnel's new forward",
        details=agent.log,
    )
    reachable(restarted_address, "there", agent=agent)
    restarted_tunnel, kept_tunnel = (
        Tunnel.objects.get(server=restarted),
        Tunnel.objects.get(server=kept),
    )
    assert restarted_tunnel.generation == 2 and restarted_tunnel.opened_at != before[restarted.pk]
    assert kept_tunnel.generation == 1 and kept_tunnel.opened_at == before[kept.pk]
    assert page_through(kept_address) == "here"


def test_a_tunnel_of_an_ended_server_is_closed(sshd, web_server, agent_runner, settings):
    # given an open tunnel
    node_server = web_server("bye")
    server, address = tunnelled_server(
        agent_outpost(sshd), settings, remote=f"127.0.0.1:{node_server.port}"
    )
    agent = agent_runner("agent-a")
    reachable(address, "bye", agent=agent)
    # when its server ends
    Server.objects.filter(pk=server.pk).update(status=Server.Status.STOPPED)
    # then the agent closes it: its port no longer answers
    wait_until(
        lambda: Tunnel.objects.get(server=server).state == Tunnel.State.CLOSED,
        timeout=15,
        what="the tunnel to close",
        details=agent.log,
    )
    wait_until(lambda: page_through(address) is None, timeout=10, what="the port to close")
