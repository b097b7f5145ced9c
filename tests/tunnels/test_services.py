"""Tunnel records and restarts on the database: opening a tunnel for a server, restart by
node or jump host, SSH settings changes, the Hub's recreate-forward call."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from outposts.models import Server
from tests.factories import (
    HubFactory,
    OutpostFactory,
    OutpostSSHFactory,
    ServerFactory,
    TunnelFactory,
)
from tunnels import services
from tunnels.models import OutpostSSH, Tunnel

pytestmark = pytest.mark.django_db


def test_a_server_of_an_agent_outpost_gets_the_agents_address_and_a_tunnel(settings):
    # given an Outpost reached through agent "hub1", advertised to the Hub as tunnel-agent
    settings.TUNNEL_BIND_PORTS = "21000-21000"
    ssh = OutpostSSHFactory(agent="hub1", bind_host="0.0.0.0", advertised_host="tunnel-agent")
    server = ServerFactory(outpost=ssh.outpost)
    # when its start returns a URL on a node
    address = services.tunnel_open_for_server(server=server, address="http://node7:8888")
    # then the Hub is given the agent's address in the same form, and the tunnel is recorded
    assert address == "http://tunnel-agent:21000"
    tunnel = Tunnel.objects.get(server=server)
    assert (tunnel.remote_host, tunnel.remote_port) == ("node7", 8888)
    assert (tunnel.agent, tunnel.bind_host, tunnel.bind_port) == ("hub1", "0.0.0.0", 21000)
    assert tunnel.desired_state == Tunnel.Desired.OPEN and tunnel.generation == 1


@pytest.mark.parametrize("reach", [None, OutpostSSH.Reach.DIRECT, OutpostSSH.Reach.HUB])
def test_a_server_reached_otherwise_keeps_its_address_and_gets_no_tunnel(reach):
    outpost = OutpostFactory()
    if reach:
        OutpostSSHFactory(outpost=outpost, reach=reach)
    server = ServerFactory(outpost=outpost)
    assert services.tunnel_open_for_server(server=server, address="node7:8888") == "node7:8888"
    assert not Tunnel.objects.exists()


def test_no_two_open_tunnels_of_an_agent_share_a_port(settings):
    # given an agent with two ports to bind
    settings.TUNNEL_BIND_PORTS = "21000-21001"
    ssh = OutpostSSHFactory()
    servers = [ServerFactory(outpost=ssh.outpost) for _ in range(3)]
    # when two servers get tunnels, then each gets a port of its own
    for server in servers[:2]:
        services.tunnel_open_for_server(server=server, address="node1:8888")
    assert set(Tunnel.objects.values_list("bind_port", flat=True)) == {21000, 21001}
    # and a third finds none left
    with pytest.raises(services.TunnelError, match="No free tunnel port"):
        services.tunnel_open_for_server(server=servers[2], address="node1:8888")


def test_an_address_without_a_port_cannot_be_tunnelled():
    ssh = OutpostSSHFactory()
    with pytest.raises(services.TunnelError):
        services.tunnel_open_for_server(server=ServerFactory(outpost=ssh.outpost), address="node")


def test_an_ended_server_closes_its_tunnel():
    from outposts.lifecycle.end import server_mark_stopped

    tunnel = TunnelFactory(server__outpost=OutpostSSHFactory().outpost)
    server_mark_stopped(server_id=tunnel.server_id, exit_code=0)
    tunnel.refresh_from_db()
    assert tunnel.desired_state == Tunnel.Desired.CLOSED


def test_restart_by_node_bumps_exactly_the_tunnels_to_that_node(queued):
    # given tunnels to node1 and node2, through two jump hosts
    first = OutpostSSHFactory(jump_host="jump-a").outpost
    second = OutpostSSHFactory(jump_host="jump-b").outpost
    to_node1 = TunnelFactory(server__outpost=first, remote_host="node1")
    to_node1_b = TunnelFactory(server__outpost=second, remote_host="NODE1")
    to_node2 = TunnelFactory(server__outpost=first, remote_host="node2")
    closed = TunnelFactory(
        server__outpost=first, remote_host="node1", desired_state=Tunnel.Desired.CLOSED
    )
    # when node1's tunnels are restarted
    assert services.tunnel_restart_for_node(node="node1") == 2
    # then those two (names compare case-insensitively) are bumped, the others not
    generations = {t.pk: t.generation for t in Tunnel.objects.all()}
    assert generations == {to_node1.pk: 2, to_node1_b.pk: 2, to_node2.pk: 1, closed.pk: 1}


def test_restart_by_jump_host_and_per_outpost_bump_only_the_matching_ones(queued):
    first = OutpostSSHFactory(jump_host="jump-a").outpost
    second = OutpostSSHFactory(jump_host="jump-b").outpost
    a, b = TunnelFactory(server__outpost=first), TunnelFactory(server__outpost=second)
    assert services.tunnel_restart_for_node(jump_host="jump-b") == 1
    # a Hub's restart is limited to the Outpost it called
    assert services.tunnel_restart_for_node(jump_host="jump-b", outpost_id=first.pk) == 0
    assert services.outpost_tunnels_restart(outpost_id=first.pk) == 1
    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.generation, b.generation) == (2, 2)
    assert a.state == Tunnel.State.PENDING


def test_changing_connection_settings_restarts_the_outposts_tunnels(queued):
    ssh = OutpostSSHFactory()
    ssh.hub_system = "renamed"  # not a connection setting
    assert services.outpost_ssh_save(ssh=ssh) is False
    ssh.jump_host = "jump-new"
    assert services.outpost_ssh_save(ssh=ssh) is True
    assert queued["queue_outpost_tunnels_restart"] == [{"outpost_id": ssh.outpost_id}]


def test_ssh_settings_need_one_key_reference_and_valid_known_hosts():
    ssh = OutpostSSHFactory.build(
        outpost=OutpostFactory(), key_path="/k", key="-----BEGIN", known_hosts="nonsense"
    )
    with pytest.raises(ValidationError) as caught:
        ssh.full_clean()
    assert {"key_path", "known_hosts"} <= set(caught.value.error_dict)


def test_a_hub_that_tunnels_itself_is_asked_to_recreate_its_forwards(fake_hub, queued):
    # given a Hub-tunnelled Outpost with a running server whose Hub holds the token
    ssh = OutpostSSHFactory(reach=OutpostSSH.Reach.HUB, jump_host="jump-a", hub_system="hpc")
    hub = HubFactory(recreate_forward_token="restart-token")
    server = ServerFactory(outpost=ssh.outpost, hub=hub, env=fake_hub.env("olga"))
    ServerFactory(outpost=ssh.outpost, hub=hub, status=Server.Status.STOPPED)
    # when the tunnels through its jump host are restarted
    services.tunnel_restart_for_node(jump_host="jump-a")
    # then a recreate-forward call is queued for that Hub, and made as the contract says
    assert queued["queue_hub_forwards_recreate"] == [{"hub_id": hub.pk, "server_id": server.pk}]
    services.hub_forwards_recreate(hub_id=hub.pk, server_id=server.pk)
    (call,) = fake_hub.recreate_calls
    assert call.path == "/hub/api/recreateforward/hpc"
    assert call.authorization == "token restart-token"


def test_no_recreate_forward_call_outside_the_hubs_callback_prefixes(fake_hub):
    ssh = OutpostSSHFactory(reach=OutpostSSH.Reach.HUB, jump_host="jump-a")
    hub = HubFactory(recreate_forward_token="t", callback_url_prefixes=["https://hub.example/"])
    server = ServerFactory(outpost=ssh.outpost, hub=hub, env=fake_hub.env("olga"))
    services.hub_forwards_recreate(hub_id=hub.pk, server_id=server.pk)
    assert fake_hub.recreate_calls == []
