"""The call-back of a server's start wrapper, POST api/servers/<id>/address: what is
recorded, and every refusal answering clear JSON and changing nothing."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone
from rest_framework.test import APIClient

from outposts.errors import PortalError
from outposts.models import Server, SpawnEvent, host_matches_patterns
from portal.crypto import credential_digest
from tests.factories import OutpostFactory, ServerFactory
from tunnels.reports import server_report_env, server_reported_address

pytestmark = pytest.mark.django_db


@pytest.fixture
def reporting_outpost():
    return OutpostFactory(
        slug="hpc",
        server_reports_address=True,
        server_callback_url="https://portal.example.org/",
        allowed_node_patterns=["node*.hpc.example.org", "127.0.0.1", "10.1.0.0/16"],
        allowed_port_min=20000,
        allowed_port_max=29999,
    )


def pending(outpost, **fields) -> tuple[Server, str]:
    """A pending server of ``outpost`` whose start attempt issued its token; and the token."""
    lease = timezone.now() + timedelta(minutes=2)
    server = ServerFactory(
        outpost=outpost,
        status=Server.Status.PENDING,
        address="",
        start_lease_until=lease,
        **fields,
    )
    env = server_report_env(server=server, lease=lease)
    server.refresh_from_db()
    return server, env["OUTPOST_CALLBACK_TOKEN"]


def report(server_id: int, body, token: str | None):
    client = APIClient()
    headers = {"HTTP_AUTHORIZATION": f"token {token}"} if token is not None else {}
    data = body if isinstance(body, str) else json.dumps(body)
    return client.post(
        f"/api/servers/{server_id}/address", data, content_type="application/json", **headers
    )


def unchanged(server: Server) -> bool:
    before = (server.status, server.reported_address, server.reported_at, server.address)
    events = SpawnEvent.objects.filter(server=server).count()
    server.refresh_from_db()
    after = (server.status, server.reported_address, server.reported_at, server.address)
    return before == after and SpawnEvent.objects.filter(server=server).count() == events


# --- What the portal gives the server ---------------------------------------------------------


def test_each_start_attempt_gets_a_fresh_token_stored_only_as_a_digest(reporting_outpost):
    # when
    server, token = pending(reporting_outpost)
    # then the server's env names where to report, with which token and ports
    lease = server.start_lease_until
    env = server_report_env(server=server, lease=lease)
    assert env["OUTPOST_CALLBACK_URL"] == (
        f"https://portal.example.org/api/servers/{server.pk}/address"
    )
    assert env["OUTPOST_PORT_RANGE"] == "20000-29999"
    # and only the newest token's digest is stored
    server.refresh_from_db()
    assert server.report_token_digest == credential_digest(env["OUTPOST_CALLBACK_TOKEN"])
    assert token not in str(Server.objects.filter(pk=server.pk).values().get())
    # so the earlier attempt's token no longer works
    assert report(server.pk, {"host": "127.0.0.1", "port": 20001}, token).status_code == 401


def test_no_token_for_an_attempt_that_lost_its_lease(reporting_outpost):
    server = ServerFactory(outpost=reporting_outpost, status=Server.Status.PENDING)
    with pytest.raises(PortalError, match="Another start attempt"):
        server_report_env(server=server, lease=timezone.now())
    server.refresh_from_db()
    assert server.report_token_digest == ""


def test_a_start_fails_clearly_when_the_portal_does_not_know_its_url(settings):
    settings.SERVER_CALLBACK_URL = ""
    outpost = OutpostFactory(server_reports_address=True, allowed_node_patterns=["*"])
    lease = timezone.now() + timedelta(minutes=1)
    server = ServerFactory(outpost=outpost, status=Server.Status.PENDING, start_lease_until=lease)
    with pytest.raises(PortalError, match="PORTAL_SERVER_CALLBACK_URL"):
        server_report_env(server=server, lease=lease)


def test_the_setting_gives_the_url_when_the_outpost_names_none(settings):
    settings.SERVER_CALLBACK_URL = "https://inside.example.org/portal"
    outpost = OutpostFactory(server_reports_address=True, allowed_node_patterns=["*"])
    lease = timezone.now() + timedelta(minutes=1)
    server = ServerFactory(outpost=outpost, status=Server.Status.PENDING, start_lease_until=lease)
    env = server_report_env(server=server, lease=lease)
    assert env["OUTPOST_CALLBACK_URL"] == (
        f"https://inside.example.org/portal/api/servers/{server.pk}/address"
    )


# --- A good report ------------------------------------------------------------------------------


def test_a_report_is_recorded_and_the_start_task_reads_it(reporting_outpost):
    # given
    server, token = pending(reporting_outpost)
    # when
    answer = report(server.pk, {"host": "node07.hpc.example.org", "port": 24567}, token)
    # then
    assert answer.status_code == 200, answer.content
    assert answer.json() == {
        "address": "node07.hpc.example.org:24567",
        "detail": "Address recorded.",
    }
    server.refresh_from_db()
    assert server.reported_address == "node07.hpc.example.org:24567"
    assert server.reported_at is not None
    assert server_reported_address(server_id=server.pk) == ("node07.hpc.example.org", 24567)
    assert server.events.filter(message__contains="reported its address").exists()
    # and the same report again is accepted, changing nothing
    again = report(server.pk, {"host": "node07.hpc.example.org", "port": 24567}, token)
    assert again.status_code == 200
    assert unchanged(server)


def test_an_address_in_an_allowed_network_is_accepted(reporting_outpost):
    server, token = pending(reporting_outpost)
    answer = report(server.pk, {"host": "10.1.200.3", "port": 20000}, token)
    assert answer.status_code == 200
    assert answer.json()["address"] == "10.1.200.3:20000"


# --- Refusals: clear JSON, nothing changed ------------------------------------------------------

GOOD = {"host": "127.0.0.1", "port": 25000}


def test_a_wrong_or_missing_token_is_refused(reporting_outpost):
    server, _ = pending(reporting_outpost)
    for token in ("osr_wrong", "", None):
        answer = report(server.pk, GOOD, token)
        assert answer.status_code == 401
        assert answer.json() == {"detail": "Not a valid call-back token for this server."}
        assert answer["WWW-Authenticate"] == "Token"
    assert unchanged(server)


def test_another_servers_token_is_refused(reporting_outpost):
    # given two pending servers
    mine, _ = pending(reporting_outpost)
    theirs, their_token = pending(reporting_outpost)
    # when the other server's token reports for mine
    answer = report(mine.pk, GOOD, their_token)
    # then
    assert answer.status_code == 401
    assert unchanged(mine) and unchanged(theirs)


def test_an_unknown_server_answers_as_a_wrong_token(reporting_outpost):
    _, token = pending(reporting_outpost)
    answer = report(999999, GOOD, token)
    assert answer.status_code == 401
    assert answer.json()["detail"] == "Not a valid call-back token for this server."


@pytest.mark.parametrize(
    "host", ["node07.other.example.org", "192.168.1.5", "10.1.evil.example", "127.0.0.2"]
)
def test_a_host_outside_the_allowed_nodes_is_refused(reporting_outpost, host):
    server, token = pending(reporting_outpost)
    answer = report(server.pk, {"host": host, "port": 25000}, token)
    assert answer.status_code == 403
    assert answer.json() == {"detail": f"Host {host!r} is not one of this Outpost's allowed nodes."}
    assert unchanged(server)


@pytest.mark.parametrize("port", [19999, 30000, 22])
def test_a_port_out_of_range_is_refused(reporting_outpost, port):
    server, token = pending(reporting_outpost)
    answer = report(server.pk, {"host": "127.0.0.1", "port": port}, token)
    assert answer.status_code == 403
    assert answer.json() == {
        "detail": f"Port {port} is outside this Outpost's allowed ports 20000-29999."
    }
    assert unchanged(server)


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[1, 2]",
        {"host": "127.0.0.1"},
        {"port": 25000},
        {"host": "127.0.0.1", "port": "many"},
        {"host": "127.0.0.1", "port": 70000},
        {"host": "http://127.0.0.1/", "port": 25000},
        {"host": "node 1", "port": 25000},
        {"host": "", "port": 25000},
    ],
)
def test_a_malformed_report_is_refused(reporting_outpost, body):
    server, token = pending(reporting_outpost)
    answer = report(server.pk, body, token)
    assert answer.status_code == 400
    assert answer.json()["detail"]
    assert unchanged(server)


@pytest.mark.parametrize("status", [Server.Status.STOPPED, Server.Status.FAILED])
def test_an_ended_servers_token_is_refused(reporting_outpost, status):
    server, token = pending(reporting_outpost)
    Server.objects.filter(pk=server.pk).update(status=status, stopped_at=timezone.now())
    server.refresh_from_db()
    answer = report(server.pk, GOOD, token)
    assert answer.status_code == 410
    assert answer.json() == {
        "detail": "This server has ended or is stopping; its address is not wanted."
    }
    assert unchanged(server)


def test_a_server_being_stopped_is_refused(reporting_outpost):
    server, token = pending(reporting_outpost)
    Server.objects.filter(pk=server.pk).update(stop_requested_at=timezone.now())
    server.refresh_from_db()
    assert report(server.pk, GOOD, token).status_code == 410
    assert unchanged(server)


def test_a_running_server_cannot_be_moved(reporting_outpost):
    server, token = pending(reporting_outpost)
    assert report(server.pk, GOOD, token).status_code == 200
    Server.objects.filter(pk=server.pk).update(
        status=Server.Status.RUNNING, address="127.0.0.1:25000"
    )
    server.refresh_from_db()
    answer = report(server.pk, {"host": "127.0.0.1", "port": 25001}, token)
    assert answer.status_code == 409
    assert "already runs at the address it reported first" in answer.json()["detail"]
    assert unchanged(server)


# --- The Outpost's allowed nodes and ports ------------------------------------------------------


@pytest.mark.parametrize(
    "host, patterns, allowed",
    [
        ("node07.hpc.example.org", ["node*.hpc.example.org"], True),
        ("NODE07.HPC.example.org", ["node*.hpc.example.org"], True),
        ("node07.hpc.example.org.evil", ["node*.hpc.example.org"], False),
        ("10.1.2.3", ["10.1.0.0/16"], True),
        ("10.2.2.3", ["10.1.0.0/16"], False),
        ("10.1.2.3", ["10.1.*"], True),
        ("10.1.evil.example", ["10.1.*"], False),  # an address glob never matches a name
        ("fd00::5", ["fd00::/64"], True),
        ("node07", [], False),
        ("node/07", ["*"], False),
    ],
)
def test_allowed_nodes(host, patterns, allowed):
    assert host_matches_patterns(host, patterns) is allowed


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"allowed_node_patterns": "node*"}, "allowed_node_patterns"),
        ({"allowed_node_patterns": ["10.1.0.0/33"]}, "allowed_node_patterns"),
        ({"allowed_node_patterns": ["node 1"]}, "allowed_node_patterns"),
        ({"server_reports_address": True, "allowed_node_patterns": []}, "allowed_node_patterns"),
        ({"allowed_port_min": 3000, "allowed_port_max": 2000}, "allowed_port_max"),
        ({"allowed_port_max": 70000}, "allowed_port_max"),
        ({"server_callback_url": "ftp://portal/"}, "server_callback_url"),
    ],
)
def test_outpost_settings_are_validated(fields, field):
    outpost = OutpostFactory.build(slug="checked", **fields)
    with pytest.raises(ValidationError) as error:
        outpost.full_clean()
    assert field in error.value.message_dict


def test_the_defaults_are_safe():
    outpost = OutpostFactory.build(slug="defaults")
    outpost.full_clean()
    assert outpost.server_reports_address is False
    assert outpost.allowed_node_patterns == []  # no host may be reported until an admin says
    assert (outpost.allowed_port_min, outpost.allowed_port_max) == (1024, 65535)
    assert outpost.reported_address_problem(host="127.0.0.1", port=8888) is not None
