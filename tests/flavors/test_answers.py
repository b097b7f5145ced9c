"""The flavor answer a Hub reads (GET flavors/, POST userflavors, the flavor update)."""

from datetime import timedelta

import pytest

from flavors.api.serializers import FlavorSerializer
from tests.factories import FlavorFactory, HubFactory, ServerFactory

pytestmark = pytest.mark.django_db


def test_every_field_of_a_flavor_as_the_hub_reads_it(hub_client, hub, outpost):
    # given a capped flavor with a runtime and resources, and an uncapped one without runtime
    FlavorFactory(
        outpost=outpost,
        name="gpu",
        display_name="One GPU",
        description="For training",
        weight=7,
        max=4,
        max_per_user=1,
        runtime=timedelta(minutes=90),
        resources={"mem_limit": "16G"},
    )
    FlavorFactory(outpost=outpost, name="small", max=None, max_per_user=None, runtime=None)
    # when
    flavors = hub_client.get("/outposts/local/flavors").json()
    # then
    assert flavors == {
        "gpu": {
            "display_name": "One GPU",
            "description": "For training",
            "weight": 7,
            "max": 4,
            "maxPerUser": 1,
            "runtime": {"hours": 1, "minutes": 30},
            "resources": {"mem_limit": "16G"},
            "current": 0,
        },
        "small": {
            "display_name": "Flavor small",
            "description": "A flavor for tests",
            "weight": 0,
            "max": -1,
            "maxPerUser": -1,
            "resources": {},
            "current": 0,
        },
    }
    assert list(flavors) == ["gpu", "small"]  # highest weight first


def test_current_counts_the_active_servers_of_each_flavor_over_all_hubs(hub_client, hub, outpost):
    # given servers of two flavors, of two Hubs, some ended
    small, large = (FlavorFactory(outpost=outpost, name=name) for name in ("small", "large"))
    other_hub = HubFactory(outposts=[outpost])
    for status in ("running", "pending", "stopping", "unknown", "requested"):
        ServerFactory(outpost=outpost, hub=other_hub, flavor=small, status=status)
    ServerFactory(outpost=outpost, hub=hub, flavor=small, status="stopped")
    ServerFactory(outpost=outpost, hub=hub, flavor=large, status="failed")
    ServerFactory(outpost=outpost, hub=hub, flavor=large)
    # when
    flavors = hub_client.get("/outposts/local/flavors").json()
    # then
    assert (flavors["small"]["current"], flavors["large"]["current"]) == (5, 1)


def test_an_answers_fields_are_the_schemas_in_its_order(hub_client, hub, outpost):
    # given a flavor with every optional field: a runtime, and the user's own count asked for
    FlavorFactory(outpost=outpost, name="gpu", runtime=timedelta(hours=1))
    # when a Hub asks for one user's flavors
    answer = hub_client.post(
        "/outposts/local/userflavors?user_id=1", {}, content_type="application/json"
    )
    # then the entry has the fields the API schema declares, in the declared order, and a
    # flavor nobody runs counts none, of the user's too
    entry = answer.json()["gpu"]
    assert list(entry) == list(FlavorSerializer().fields)
    assert (entry["current"], entry["currentPerUser"]) == (0, 0)
