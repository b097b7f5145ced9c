"""The tunnel agent under the database role ``tunnel_agent_grants`` makes: it opens its
tunnels and learns a host key with those grants alone, and cannot read what it has no use
for (Hub credentials, servers' environments)."""

from __future__ import annotations

import secrets

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection

from outposts.models import Server
from tests.factories import HubFactory, OutpostFactory, OutpostSSHFactory, ServerFactory
from tests.support.portal import portal_process_env
from tests.support.processes import free_port, wait_until
from tests.support.tunnels import agent_start, page_through
from tunnels.models import OutpostSSH, Tunnel
from tunnels.services import tunnel_open_for_server

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def agent_role():
    """A login role with nothing but the agent's grants; dropped with them afterwards."""
    role = f"agent_{secrets.token_hex(4)}"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {role} LOGIN")
    call_command("tunnel_agent_grants", role=role, apply=True)
    yield role
    with connection.cursor() as cursor:
        cursor.execute(f"DROP OWNED BY {role}")
        cursor.execute(f"DROP ROLE {role}")


def as_role(role: str) -> psycopg.Connection:
    db = connection.settings_dict
    return psycopg.connect(
        host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, dbname=db["NAME"], user=role
    )


def test_the_agent_runs_on_its_grants_alone(sshd, web_server, agent_role, settings, tmp_path):
    # given an Outpost that learns its jump host's key, and a server on a node behind it
    node_server = web_server("reached with few rights")
    outpost = OutpostFactory()
    OutpostSSHFactory(
        outpost=outpost,
        jump_host=sshd.host,
        jump_port=sshd.port,
        user=sshd.user,
        key_path=str(sshd.key_path),
        known_hosts="",
        accept_new_host_keys=True,
        agent="least",
    )
    server = ServerFactory(outpost=outpost, env={"JUPYTERHUB_API_TOKEN": "a-hub-token"})
    port = free_port()
    settings.TUNNEL_BIND_PORTS = f"{port}-{port}"
    address = tunnel_open_for_server(server=server, address=f"127.0.0.1:{node_server.port}")
    Server.objects.filter(pk=server.pk).update(address=address)
    HubFactory(name="elsewhere")

    # when the agent runs as the role
    env = portal_process_env(tmp_path)
    env["DATABASE_URL"] = env["DATABASE_URL"].replace(
        "postgres://postgres@", f"postgres://{agent_role}@", 1
    )
    assert agent_role in env["DATABASE_URL"]
    agent = agent_start(tmp_path, "least", env=env)
    try:
        # then the tunnel opens, the host key is learnt, and the health is recorded
        wait_until(
            lambda: page_through(address) == "reached with few rights",
            timeout=30,
            what="the tunnel",
            details=agent.log,
        )
        assert sshd.known_hosts_line.split()[2] in OutpostSSH.objects.get().known_hosts
        assert Tunnel.objects.get(server=server).state == Tunnel.State.OPEN
    finally:
        agent.stop()
    assert "permission denied" not in agent.log().lower(), agent.log()

    # and the role cannot read Hub credentials or a server's environment
    for query in ("SELECT secret_digest FROM outposts_hub", "SELECT env FROM outposts_server"):
        with as_role(agent_role) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(query)
