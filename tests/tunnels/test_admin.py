"""The tunnels admin: a site admin sees and restarts only their Outposts' tunnels; a server's
page says how the server is reached."""

from __future__ import annotations

import pytest

from tests.factories import OutpostSSHFactory, TunnelFactory
from tunnels.models import OutpostSSH, Tunnel

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/tunnels/tunnel/"


@pytest.fixture
def tunnels(two_outposts):
    mine, theirs = two_outposts
    OutpostSSHFactory(outpost=mine, jump_host="jump-mine")
    OutpostSSHFactory(outpost=theirs, jump_host="jump-theirs")
    return (
        TunnelFactory(server__outpost=mine, remote_host="node-mine"),
        TunnelFactory(server__outpost=theirs, remote_host="node-theirs"),
    )


def test_a_site_admin_sees_only_their_outposts_tunnels(client, site_admin, tunnels):
    mine, theirs = tunnels
    page = client.get(CHANGELIST)
    assert page.status_code == 200
    assert b"node-mine" in page.content
    assert b"node-theirs" not in page.content
    assert client.get(f"{CHANGELIST}{mine.pk}/change/").status_code == 200
    assert client.get(f"{CHANGELIST}{theirs.pk}/change/").status_code == 302  # "does not exist"


def test_a_site_admin_restarts_only_their_own(client, site_admin, tunnels):
    mine, theirs = tunnels
    client.post(
        CHANGELIST,
        {"action": "restart_tunnels", "_selected_action": [mine.pk, theirs.pk]},
    )
    assert Tunnel.objects.get(pk=mine.pk).generation == 2
    assert Tunnel.objects.get(pk=theirs.pk).generation == 1


def test_a_site_admin_sees_only_their_outposts_ssh_settings(client, site_admin, tunnels):
    page = client.get("/admin/tunnels/outpostssh/")
    assert b"jump-mine" in page.content and b"jump-theirs" not in page.content


def test_the_key_is_never_shown_and_is_stored_encrypted(client, superuser, two_outposts):
    mine, _ = two_outposts
    ssh = OutpostSSHFactory(outpost=mine, key_path="", key="-----BEGIN OPENSSH PRIVATE KEY-----x")
    page = client.get(f"/admin/tunnels/outpostssh/{ssh.pk}/change/")
    assert page.status_code == 200
    assert b"BEGIN OPENSSH" not in page.content
    raw = OutpostSSH.objects.filter(pk=ssh.pk).values_list("key", flat=True)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT key FROM tunnels_outpostssh WHERE id = %s", [ssh.pk])
        (stored,) = cursor.fetchone()
    assert "BEGIN" not in stored
    assert raw  # decrypts for the agent


def test_the_server_page_says_how_the_server_is_reached(client, site_admin, tunnels):
    mine, _ = tunnels
    page = client.get(f"/admin/outposts/server/{mine.server_id}/change/")
    assert page.status_code == 200
    assert (
        f"Through tunnel agent default: 127.0.0.1:{mine.bind_port} -&gt; node-mine:8888".encode()
        in (page.content)
    )


def test_deleting_an_outposts_ssh_settings_closes_its_tunnels(client, site_admin, tunnels):
    mine, theirs = tunnels
    ssh = OutpostSSH.objects.get(outpost=mine.outpost)
    response = client.post(f"/admin/tunnels/outpostssh/{ssh.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not OutpostSSH.objects.filter(pk=ssh.pk).exists()
    assert Tunnel.objects.get(pk=mine.pk).desired_state == Tunnel.Desired.CLOSED
    assert Tunnel.objects.get(pk=theirs.pk).desired_state == Tunnel.Desired.OPEN
