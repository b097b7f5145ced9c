"""apply_config's ``ssh`` entry of an Outpost and the Hub's tunnel fields: written as the
admin writes them (validated, key encrypted, a connection change restarts the tunnels), and
refused with the entry and field named."""

from __future__ import annotations

import pytest

from flavors.provisioning import ConfigError
from outposts.models import Hub, Outpost
from outposts.provisioning import config_apply
from tests.factories import ServerFactory, TunnelFactory
from tunnels.models import OutpostSSH, Tunnel

pytestmark = pytest.mark.django_db

KNOWN = (
    "[login.example.org]:2222 ssh-ed25519 "
    "AAAAC3NzaC1lZDI1NTE5AAAAIOr6mVtd9vRN0uXaWzW0KJbeZQjAVo0oXc3eX4U3rBnN"
)
SSH = {
    "reach": "agent",
    "jump_host": "login.example.org",
    "jump_port": 2222,
    "user": "tunnel",
    "key_env": "TUNNEL_KEY",
    "known_hosts": KNOWN,
    "agent": "hub1",
    "advertised_host": "tunnel-agent",
}


def document(ssh=None, **hub):
    outpost = {"slug": "hpc", "spawner_class": "jupyterhub.spawner.SimpleLocalProcessSpawner"}
    if ssh is not None:
        outpost["ssh"] = ssh
    return {
        "outposts": [outpost],
        "hubs": [{"name": "hub1", "secret": "a-secret", "outposts": ["hpc"], **hub}],
    }


@pytest.fixture(autouse=True)
def tunnel_key(monkeypatch):
    monkeypatch.setenv("TUNNEL_KEY", "-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n")
    monkeypatch.setenv("HUB1_RECREATE_TOKEN", "hub-api-token")


def test_an_outposts_ssh_settings_are_written_once_with_the_key_encrypted(queued):
    # when a document with SSH settings is applied twice
    first = config_apply(data=document(SSH))
    second = config_apply(data=document(SSH))
    # then the settings are as the file says, the key comes from the environment
    ssh = OutpostSSH.objects.get(outpost__slug="hpc")
    assert (ssh.reach, ssh.jump_host, ssh.jump_port, ssh.user, ssh.agent) == (
        "agent",
        "login.example.org",
        2222,
        "tunnel",
        "hub1",
    )
    assert ssh.key.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert ssh.bind_host == "127.0.0.1" and ssh.accept_new_host_keys is False  # defaults
    assert "created Outpost 'hpc' ssh" in first.lines()
    assert "unchanged Outpost 'hpc' ssh" in second.lines()
    # and the key is not in the database in clear
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT key::text FROM tunnels_outpostssh")
        (stored,) = cursor.fetchone()
    assert "PRIVATE KEY" not in stored
    assert queued == {}  # nothing to restart: the settings are new


def test_a_changed_connection_setting_restarts_the_outposts_tunnels(queued):
    config_apply(data=document(SSH))
    summary = config_apply(data=document({**SSH, "jump_host": "login2.example.org"}))
    assert "updated Outpost 'hpc' ssh" in summary.lines()
    outpost = Outpost.objects.get(slug="hpc")
    assert queued["queue_outpost_tunnels_restart"] == [{"outpost_id": outpost.pk}]


def test_an_outpost_without_ssh_is_reached_directly_and_its_tunnels_close(queued):
    config_apply(data=document(SSH))
    outpost = Outpost.objects.get(slug="hpc")
    tunnel = TunnelFactory(server=ServerFactory(outpost=outpost), outpost=outpost)
    summary = config_apply(data=document())
    assert "deleted Outpost 'hpc' ssh" in summary.lines()
    assert not OutpostSSH.objects.exists()
    tunnel.refresh_from_db()
    assert tunnel.desired_state == Tunnel.Desired.CLOSED


@pytest.mark.parametrize(
    ("ssh", "message"),
    [
        ({**SSH, "port": 22}, "Outpost 'hpc' ssh: unknown field 'port'"),
        ({**SSH, "user": ""}, "Outpost 'hpc' ssh: field 'user': The agent logs in as this user."),
        (
            {**SSH, "key_env": "NO_SUCH_VARIABLE"},
            "environment variable NO_SUCH_VARIABLE is not set",
        ),
        ({**SSH, "known_hosts": "not a key line"}, "Outpost 'hpc' ssh: field 'known_hosts'"),
        ({**SSH, "jump_port": 70000}, "Outpost 'hpc' ssh: field 'jump_port'"),
        ("agent", "Outpost 'hpc' ssh: must be a mapping"),
    ],
)
def test_bad_ssh_settings_are_refused_naming_the_field_and_nothing_is_written(ssh, message):
    with pytest.raises(ConfigError) as raised:
        config_apply(data=document(ssh))
    assert message in str(raised.value)
    assert not Outpost.objects.exists() and not OutpostSSH.objects.exists()


def test_a_hubs_tunnel_right_and_recreate_forward_token_come_from_the_file():
    config_apply(
        data=document(may_restart_tunnels=True, recreate_forward_token_env="HUB1_RECREATE_TOKEN")
    )
    hub = Hub.objects.get(name="hub1")
    assert hub.may_restart_tunnels is True
    assert hub.recreate_forward_token == "hub-api-token"
    # and left out, the right is off again and the token kept
    config_apply(data=document())
    hub.refresh_from_db()
    assert (hub.may_restart_tunnels, hub.recreate_forward_token) == (False, "hub-api-token")
    with pytest.raises(ConfigError, match="environment variable NO_TOKEN is not set"):
        config_apply(data=document(recreate_forward_token_env="NO_TOKEN"))
