"""POST <base>tunnels/restart: the permission ladder and what it queues."""

from __future__ import annotations

import pytest

from outposts import dispatch
from tests.factories import OutpostFactory
from tests.support.api import BASE, send

pytestmark = pytest.mark.django_db


@pytest.fixture
def restarts(monkeypatch):
    calls: list[dict] = []
    monkeypatch.setattr(dispatch, "queue_tunnel_restart_for_node", lambda **kw: calls.append(kw))
    return calls


def test_a_hub_without_the_right_is_refused(hub_client, restarts):
    response = send(hub_client, "POST", BASE + "tunnels/restart", {"node": "node1"})
    assert response.status_code == 403
    assert response.json() == {"detail": "This Hub may not restart tunnels."}
    assert restarts == []


def test_an_outpost_the_hub_may_not_use_is_not_found(hub, hub_client, restarts):
    hub.may_restart_tunnels = True
    hub.save()
    OutpostFactory(slug="other")
    response = send(hub_client, "POST", "/outposts/other/tunnels/restart", {"node": "node1"})
    assert response.status_code == 404
    assert restarts == []


@pytest.mark.parametrize("body", [{"node": "node1"}, {"jump_host": "jump.example.org"}])
def test_a_granted_hub_restarts_its_outposts_tunnels(hub, hub_client, outpost, restarts, body):
    hub.may_restart_tunnels = True
    hub.save()
    response = send(hub_client, "POST", BASE + "tunnels/restart", body)
    assert response.status_code == 202
    assert response.json() == body
    assert restarts == [
        {
            "node": body.get("node"),
            "jump_host": body.get("jump_host"),
            "outpost_id": outpost.pk,
        }
    ]


@pytest.mark.parametrize("body", [{}, {"node": "n", "jump_host": "j"}, {"node": ""}])
def test_a_body_naming_neither_or_both_is_refused(hub, hub_client, restarts, body):
    hub.may_restart_tunnels = True
    hub.save()
    response = send(hub_client, "POST", BASE + "tunnels/restart", body)
    assert response.status_code == 400
    assert restarts == []


def test_without_credentials_it_is_401(client, outpost):
    response = client.post(BASE + "tunnels/restart", {"node": "n"}, content_type="application/json")
    assert response.status_code == 401
