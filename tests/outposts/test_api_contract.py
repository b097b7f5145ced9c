"""The API answers the shared contract examples (tests/contract/) with their exact shapes.

The hubclient's tests read the same files, so a change on either side that breaks the other
fails here or there.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from outposts.models import Server
from tests.factories import FlavorFactory, ServerFactory
from tests.support.api import send_exchange
from tests.support.contract import CONTRACT_DIR, assert_same_shape, contract

pytestmark = pytest.mark.django_db

# Every file of tests/contract/ and the test that sends it.
EXAMPLES = {
    "start-sync.stock-hub.json",
    "start-async.hubclient.json",
    "start-refused.json",
    "poll-running.json",
    "poll-ended.json",
    "poll-unknown.json",
    "stop-sync.json",
    "stop-async.json",
    "list.json",
    "events.json",
    "flavors.json",
    "userflavors.json",
    "userflavors-user.json",
}


def test_every_example_file_is_checked_here():
    assert {path.name for path in CONTRACT_DIR.glob("*.json")} == EXAMPLES


def check(name: str, client, base: str = "/outposts/local/"):
    """Send the example's request; assert the status code and the answer's shape."""
    assert name in EXAMPLES
    exchange = contract(name)
    response = send_exchange(client, exchange, base)
    assert response.status_code == exchange["response"]["status"], response.content
    assert_same_shape(exchange["response"]["body"], response.json())
    return response


@pytest.fixture
def small(outpost):
    return FlavorFactory(
        outpost=outpost,
        name="small",
        weight=10,
        max=20,
        max_per_user=2,
        runtime=timedelta(hours=2),
        resources={"cpu_limit": 1, "mem_limit": "2G"},
    )


def test_stock_hub_start_is_accepted_and_answered(hub_client, outpost, small, short_sync_wait):
    # when a stock Hub sends its recorded start, waiting for the outcome
    check("start-sync.stock-hub.json", hub_client)
    # then olga's default server exists under the Hub's start_id
    server = Server.objects.get()
    assert (server.name, server.start_id, server.user_name) == (
        "",
        "ef39de15010a4d69a6f7db84a40b6815",
        "olga",
    )


def test_hubclient_start_is_accepted_with_its_flavor_and_project(hub_client, outpost, small):
    # The Outpost passes "project" on to its spawner; flavor and outpost are admission's only.
    outpost.allowed_user_options = ["project"]
    outpost.save()
    check("start-async.hubclient.json", hub_client)
    server = Server.objects.get()
    assert server.flavor == small
    assert server.user_options == {"project": "hpc-01"}


def test_refused_start_has_the_exact_error_body(hub_client, small):
    response = check("start-refused.json", hub_client)
    assert response.json() == contract("start-refused.json")["response"]["body"]


def test_poll_while_running_and_once_ended(hub_client, small):
    # given the stock Hub's server, started
    send_exchange(hub_client, contract("start-async.hubclient.json"))
    stock = contract("start-sync.stock-hub.json")
    stock["request"]["headers"]["execution-type"] = "async"
    send_exchange(hub_client, stock)
    # then a poll answers null while it is active
    assert check("poll-running.json", hub_client).json()["status"] is None
    # and its exit code once it ended
    Server.objects.filter(name="").update(status=Server.Status.STOPPED, exit_code=0)
    assert check("poll-ended.json", hub_client).json()["status"] == 0


def test_poll_of_an_unknown_server(hub_client, outpost):
    assert check("poll-unknown.json", hub_client).json() == {"detail": "Item not found"}


def test_stops(hub_client, hub, outpost, small, short_sync_wait):
    ServerFactory(hub=hub, outpost=outpost, name="", start_id="ef39de15010a4d69a6f7db84a40b6815")
    ServerFactory(hub=hub, outpost=outpost, name="lab", start_id="7c1d0a52b8e54f0a9c3e1f2a4b6d8e90")
    check("stop-sync.json", hub_client)
    check("stop-async.json", hub_client)
    assert not Server.objects.visible().exists()


def test_list(hub_client, hub, outpost, small):
    ServerFactory(
        hub=hub,
        outpost=outpost,
        flavor=small,
        name="lab",
        spawner_state={"pid": 1},
        end_at=timezone.now() + timedelta(hours=2),
    )
    response = check("list.json", hub_client)
    assert response.json()[0]["name"] == "lab"


def test_events(hub_client, small):
    send_exchange(hub_client, contract("start-async.hubclient.json"))
    response = check("events.json", hub_client)
    assert response.json()["events"][0]["message"] == "Start request accepted."


def test_flavors_and_userflavors(hub_client, small):
    for name in ("flavors.json", "userflavors.json", "userflavors-user.json"):
        exchange = contract(name)
        response = send_exchange(hub_client, exchange)
        assert response.status_code == 200
        example = exchange["response"]["body"]["small"]
        assert response.json().keys() == {"small"}
        for flavor in response.json().values():
            assert_same_shape(example, flavor)
        for header, value in exchange["response"].get("headers", {}).items():
            assert response[header] == value, name
