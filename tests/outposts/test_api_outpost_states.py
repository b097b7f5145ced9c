"""Draining and disabled Outposts: running servers stay visible to their Hub.

A Hub treats a 404 poll as "the server stopped" (api-contract.md §7): if a disabled Outpost
answered 404, the Hub would forget a server that keeps running (and using the allocation).
"""

import pytest

from outposts.models import Outpost, Server
from tests.factories import FlavorFactory, ServerFactory
from tests.support.api import ASYNC, send, start_body

pytestmark = pytest.mark.django_db

BASE = "/outposts/local/"


@pytest.fixture(params=[Outpost.State.DRAINING, Outpost.State.DISABLED])
def winding_down(request, outpost, hub):
    """The granted Outpost with a running server of the Hub, then set draining or disabled."""
    flavor = FlavorFactory(outpost=outpost, name="small")
    server = ServerFactory(hub=hub, outpost=outpost, flavor=flavor, name="lab", start_id="s1")
    outpost.state = request.param
    outpost.save()
    return server


def test_poll_list_and_stop_keep_working(hub_client, winding_down):
    # when the Hub polls, lists and stops its server
    poll = send(hub_client, "GET", BASE + "services/lab/s1")
    listed = send(hub_client, "GET", BASE + "services/")
    stop = send(hub_client, "DELETE", BASE + "services/lab/s1", headers=ASYNC)
    # then the server is still running for it, listed, and its stop is under way
    assert poll.status_code == 200
    assert poll.json() == {"status": None, "logs": []}
    assert [item["name"] for item in listed.json()] == ["lab"]
    assert stop.status_code == 202
    winding_down.refresh_from_db()
    assert winding_down.status == Server.Status.STOPPING
    assert winding_down.removed_at is not None


def test_starts_are_refused_with_419(hub_client, winding_down, outpost):
    # when the Hub starts another server
    response = send(hub_client, "POST", BASE + "services", start_body(name="other"), headers=ASYNC)
    # then it is refused in the contract's shape, saying why
    assert response.status_code == 419
    assert f"is {outpost.state} and accepts no starts" in response.json()["args"][0]
    assert not Server.objects.filter(name="other").exists()


def test_flavors_are_empty_only_when_disabled(hub_client, winding_down, outpost):
    # when the Hub asks for the flavors, of the Hub and of one user
    flavors = send(hub_client, "GET", BASE + "flavors/")
    user_flavors = send(hub_client, "POST", BASE + "userflavors", {"name": "ada"})
    # then a disabled Outpost offers none; a draining one still shows its counts
    expected = ["small"] if outpost.state == Outpost.State.DRAINING else []
    assert flavors.status_code == user_flavors.status_code == 200
    assert list(flavors.json()) == expected
    assert list(user_flavors.json()) == expected
