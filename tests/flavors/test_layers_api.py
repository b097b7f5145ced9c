"""The layers through the API: ``flavors/``, ``userflavors`` and starts answer as one
resolution says (Hub policy, then the best-matching user rule), with the Hub's cap."""

from datetime import timedelta

import pytest
from rest_framework.test import APIClient

from flavors.models import HubPolicy, UserRule
from outposts.models import Outpost, Server
from tests.factories import FlavorFactory, HubFactory
from tests.support.api import ASYNC, BASE, basic_auth, send, start_body

STAFF = {"name": "ada", "groups": ["staff"]}
STUDENT = {"name": "bob", "groups": ["students"]}


@pytest.fixture
def flavors(outpost):
    return {
        "small": FlavorFactory(outpost=outpost, name="small", weight=1, max=None),
        "large": FlavorFactory(outpost=outpost, name="large", weight=5, max=10),
        "gpu": FlavorFactory(outpost=outpost, name="gpu", weight=3, max=4),
    }


@pytest.fixture
def course(outpost, hub, flavors):
    """hub1 is a course Hub: small, and large with a cap of 3 and a 4 h runtime; no gpu.
    Its staff get large only, one each."""
    HubPolicy.objects.create(outpost=outpost, hub=hub, flavor=flavors["small"])
    HubPolicy.objects.create(
        outpost=outpost,
        hub=hub,
        flavor=flavors["large"],
        cap=3,
        overrides={"runtime": {"hours": 4}},
    )
    HubPolicy.objects.create(outpost=outpost, hub=hub, flavor=flavors["gpu"], allowed=False)
    staff = UserRule.objects.create(
        outpost=outpost,
        name="staff",
        attributes={"groups": ["staff"]},
        overrides={"large": {"max_per_user": 1}},
    )
    staff.flavors.set([flavors["large"]])
    return hub


@pytest.fixture
def other_client(outpost):
    """A second Hub on the same Outpost, without policies."""
    HubFactory(name="hub2", outposts=[outpost])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=basic_auth("hub2"))
    return client


def start(client, n: int, flavor: str, authentication: dict):
    body = start_body(name=f"s{n}", start_id=str(n), user_id=str(n % 100), flavor=flavor)
    body["user_options"]["flavor"] = flavor
    body["authentication"] = authentication
    return send(client, "POST", BASE + "services", body, headers=ASYNC)


def refusal(response) -> str:
    assert response.status_code == 419, response.content
    return response.json()["args"][0]


def summary(answer: dict) -> dict:
    return {
        name: (item["max"], item["current"], item["maxPerUser"]) for name, item in answer.items()
    }


@pytest.mark.django_db
def test_the_course_hub_lists_its_policy_and_the_other_hub_everything(
    course, hub_client, other_client
):
    # when each Hub lists its flavors
    own = hub_client.get(BASE + "flavors").json()
    other = other_client.get(BASE + "flavors").json()
    # then the course Hub sees its allow-list, its cap as max and its runtime override
    assert list(own) == ["large", "small"]
    assert own["large"]["max"] == 3 and own["large"]["runtime"] == {"hours": 4}
    # and the other Hub the Outpost's flavors as they are
    assert list(other) == ["large", "gpu", "small"]
    assert other["large"]["max"] == 10 and other["large"]["runtime"] == {"hours": 2}


@pytest.mark.django_db
def test_userflavors_applies_the_best_rule_on_top_of_the_hubs_answer(course, hub_client):
    staff = send(hub_client, "POST", BASE + "userflavors", STAFF).json()
    student = send(hub_client, "POST", BASE + "userflavors", STUDENT).json()
    listed = hub_client.get(BASE + "flavors").json()
    assert summary(staff) == {"large": (3, 0, 1)}
    assert staff["large"]["runtime"] == {"hours": 4}  # the Hub's override stays under the rule's
    assert student == listed  # no matching rule: the Hub's answer


@pytest.mark.django_db
def test_starts_are_admitted_as_the_layers_say_and_the_hub_cap_counts_only_its_servers(
    course, hub_client, other_client
):
    # a staff user may start large once, and nothing else
    assert "Allowed values for user: ['large']" in refusal(start(hub_client, 1, "small", STAFF))
    assert start(hub_client, 1, "large", STAFF).status_code == 202
    assert refusal(start(hub_client, 101, "large", STAFF)) == (
        "s101 - Start with flavor large not allowed. Each user may only start 1 of large"
    )
    # students get the Hub's flavors: gpu is not among them
    assert refusal(start(hub_client, 2, "gpu", STUDENT)) == (
        "s2 - Start with flavor gpu not allowed. Allowed values for user: ['large', 'small']"
    )
    assert start(hub_client, 2, "large", STUDENT).status_code == 202
    assert start(hub_client, 3, "large", STUDENT).status_code == 202
    # the course Hub's cap of 3 is full, and the refusal names the Hub
    assert refusal(start(hub_client, 4, "large", STUDENT)) == (
        "s4 - Start with large for hub1 not allowed. Maximum (3) already reached."
    )
    # the other Hub still starts large: only the flavor's max of 10 binds it
    assert start(other_client, 5, "large", STUDENT).status_code == 202
    # each Hub's answer says what it may still start: max - current
    assert summary(hub_client.get(BASE + "flavors").json())["large"] == (3, 3, -1)
    assert summary(other_client.get(BASE + "flavors").json())["large"] == (10, 4, -1)


@pytest.mark.django_db
def test_the_binding_limit_is_the_one_with_least_room(course, flavors, hub_client, other_client):
    # given large's max lowered to 5, with 4 servers of the other Hub running
    flavors["large"].max = 5
    flavors["large"].save()
    for n in range(4):
        assert start(other_client, n, "large", STUDENT).status_code == 202
    # then the course Hub, with its own cap of 3 unused, may start only one more
    assert summary(hub_client.get(BASE + "flavors").json())["large"] == (5, 4, -1)
    assert start(hub_client, 10, "large", STUDENT).status_code == 202
    assert refusal(start(hub_client, 11, "large", STUDENT)) == (
        "s11 - Start with large for hub1 not allowed. Maximum (5) already reached."
    )


@pytest.mark.django_db
def test_userflavors_with_a_user_id_counts_that_users_own_servers(course, hub_client):
    assert start(hub_client, 7, "large", STAFF).status_code == 202
    answer = send(hub_client, "POST", BASE + "userflavors?user_id=7", STAFF).json()
    other_user = send(hub_client, "POST", BASE + "userflavors?user_id=8", STAFF).json()
    plain = send(hub_client, "POST", BASE + "userflavors", STAFF).json()
    assert answer["large"]["currentPerUser"] == 1
    assert other_user["large"]["currentPerUser"] == 0
    assert "currentPerUser" not in plain["large"]  # the stock answer's shape without user_id


@pytest.mark.django_db
@pytest.mark.parametrize("user_id", ["abc", "1 OR 1=1", "x" * 100])
def test_a_user_id_that_is_not_a_hub_user_id_is_refused(course, hub_client, user_id):
    response = send(hub_client, "POST", BASE + f"userflavors?user_id={user_id}", STAFF)
    assert response.status_code == 400


@pytest.mark.django_db
def test_an_outpost_without_flavors_admits_any_flavor_a_start_names(outpost, hub_client):
    response = start(hub_client, 1, "whatever-the-hub-says", STUDENT)
    assert response.status_code == 202


@pytest.mark.django_db
def test_flavor_answers_carry_the_outposts_state_and_message(outpost, flavors, hub_client):
    outpost.state = Outpost.State.DRAINING
    outpost.state_message = "Maintenance until Monday 08:00 – sorry"
    outpost.save()
    for response in (
        hub_client.get(BASE + "flavors"),
        send(hub_client, "POST", BASE + "userflavors", STAFF),
    ):
        assert response.headers["Outpost-State"] == "draining"
        message = response.headers["Outpost-State-Message"]
        assert message.encode().decode("unicode_escape") == outpost.state_message
    assert "Maintenance until Monday" in refusal(start(hub_client, 1, "small", STAFF))


@pytest.mark.django_db
def test_an_active_outpost_without_message_sends_no_message_header(outpost, flavors, hub_client):
    response = hub_client.get(BASE + "flavors")
    assert response.headers["Outpost-State"] == "active"
    assert "Outpost-State-Message" not in response.headers


@pytest.mark.django_db
def test_a_frozen_server_keeps_the_layers_settings(course, hub_client):
    assert start(hub_client, 1, "large", STAFF).status_code == 202
    server = Server.objects.get(name="s1")
    assert server.runtime == timedelta(hours=4)
