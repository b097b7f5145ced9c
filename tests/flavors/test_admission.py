from datetime import timedelta

import pytest

from flavors.services import flavor_admit
from outposts.errors import StartRefused
from outposts.models import Server
from outposts.runner.spawner import ServerSpec
from outposts.services import StartRequest, server_start
from tests.factories import FlavorFactory, HubFactory, ServerFactory

pytestmark = pytest.mark.django_db


def start(hub, outpost, *, user_id="1", flavor=None, name="", start_id="s1"):
    request = StartRequest(
        name=name,
        start_id=start_id,
        env={"JUPYTERHUB_USER_ID": user_id, "JUPYTERHUB_USER": f"user{user_id}"},
        flavor=flavor,
    )
    return server_start(hub=hub, outpost=outpost, request=request)


def test_flavor_max_counts_active_servers_of_every_hub(hub, outpost):
    # given a flavor with max 2 and one active server of another Hub
    flavor = FlavorFactory(outpost=outpost, name="small", max=2)
    ServerFactory(outpost=outpost, flavor=flavor, hub=HubFactory(outposts=[outpost]))
    ServerFactory(outpost=outpost, flavor=flavor, status=Server.Status.STOPPED)
    # when this Hub starts two servers
    start(hub, outpost, flavor="small", start_id="a")
    with pytest.raises(StartRefused) as refused:
        start(hub, outpost, flavor="small", start_id="b")
    # then the second is refused with the contract's message
    assert refused.value.message == (
        " - Start with small for hub1 not allowed. Maximum (2) already reached."
    )


def test_max_per_user_is_per_hub_user_id(hub, outpost):
    FlavorFactory(outpost=outpost, name="small", max_per_user=1)
    start(hub, outpost, user_id="1", flavor="small", name="a")
    _, created = start(hub, outpost, user_id="2", flavor="small", name="a", start_id="s2")
    assert created
    with pytest.raises(StartRefused) as refused:
        start(hub, outpost, user_id="1", flavor="small", name="b")
    assert refused.value.message == (
        "b - Start with flavor small not allowed. Each user may only start 1 of small"
    )


def test_unknown_flavor_lists_the_allowed_ones(hub, outpost):
    FlavorFactory(outpost=outpost, name="small")
    FlavorFactory(outpost=outpost, name="large")
    with pytest.raises(StartRefused) as refused:
        start(hub, outpost, flavor="huge", name="x")
    assert refused.value.message == (
        "x - Start with flavor huge not allowed. Allowed values for user: ['large', 'small']"
    )


def test_without_a_flavor_name_the_heaviest_flavor_is_used(hub, outpost):
    FlavorFactory(outpost=outpost, name="small", weight=1)
    FlavorFactory(outpost=outpost, name="default", weight=10)
    server, created = start(hub, outpost)
    assert created and server.flavor.name == "default"


def test_the_outpost_wide_per_user_limit(hub, outpost):
    outpost.max_servers_per_user = 1
    outpost.save()
    start(hub, outpost, name="a")
    with pytest.raises(StartRefused) as refused:
        start(hub, outpost, name="b")
    assert refused.value.message == (
        "b - User with user id 1 of hub1 has reached the maximum limit of services (1)"
    )


def test_a_repeated_start_returns_the_same_server(hub, outpost):
    first, created = start(hub, outpost, start_id="same")
    again, created_again = start(hub, outpost, start_id="same")
    assert created and not created_again and first.pk == again.pk
    assert Server.objects.count() == 1


def test_only_allow_listed_user_options_are_kept_for_the_spawner(hub, outpost):
    # given an Outpost that passes only "image" on; flavor and project are admission's inputs
    outpost.allowed_user_options = ["image"]
    outpost.save()
    FlavorFactory(outpost=outpost, name="small")
    request = StartRequest(
        name="",
        env={"JUPYTERHUB_USER_ID": "1", "JUPYTERHUB_USER": "user1"},
        flavor="small",
        user_options={"flavor": "small", "project": "p1", "image": "lab:1", "prologue": "x"},
    )
    # when
    server, _ = server_start(hub=hub, outpost=outpost, request=request)
    # then
    assert server.flavor.name == "small"
    assert Server.objects.get(pk=server.pk).user_options == {"image": "lab:1"}


def test_a_flavors_max_counts_only_servers_of_that_flavor(hub, outpost):
    # given a flavor with max 1 and an Outpost full of another flavor's servers
    FlavorFactory(outpost=outpost, name="small", max=1)
    large = FlavorFactory(outpost=outpost, name="large")
    for _ in range(3):
        ServerFactory(outpost=outpost, hub=hub, flavor=large)
    # when a user starts the first server of the small flavor
    server, created = start(hub, outpost, flavor="small")
    # then it is admitted: the other flavor's servers do not use its slot
    assert created and server.flavor.name == "small"


def test_the_admitted_flavor_is_frozen_onto_the_server(hub, outpost):
    # given a flavor
    flavor = FlavorFactory(
        outpost=outpost,
        name="small",
        display_name="Small",
        description="1 CPU",
        runtime=timedelta(hours=2),
        resources={"mem_limit": "2G"},
    )
    # when a start is admitted, and an admin then edits the flavor
    server, _ = start(hub, outpost, flavor="small")
    flavor.runtime, flavor.resources = timedelta(minutes=5), {"mem_limit": "64G"}
    flavor.save()
    server.refresh_from_db()
    # then the server keeps what it was admitted with
    assert server.flavor_settings == {
        "display_name": "Small",
        "description": "1 CPU",
        "runtime_seconds": 7200.0,
        "resources": {"mem_limit": "2G"},
    }
    assert server.runtime == timedelta(hours=2)
    assert ServerSpec.from_server(server).trait_values["mem_limit"] == "2G"


def test_a_start_on_an_outpost_without_flavors_has_no_flavor_settings(hub, outpost):
    server, _ = start(hub, outpost)
    assert (server.flavor, server.flavor_settings, server.runtime) == (None, {}, None)


def test_per_user_limits_count_only_that_hub_users_active_servers(hub, outpost):
    # given limits of one server per user, the user's ended servers, another user's server,
    # and another Hub's user with the same user id
    outpost.max_servers_per_user = 2
    outpost.save()
    small = FlavorFactory(outpost=outpost, name="small", max_per_user=1)
    other_hub = HubFactory(outposts=[outpost])
    ServerFactory(outpost=outpost, hub=other_hub, flavor=small, user_id="1")
    ServerFactory(outpost=outpost, hub=other_hub, flavor=small, user_id="1")
    ServerFactory(outpost=outpost, hub=hub, flavor=small, user_id="2")
    for status in Server.ENDED:
        ServerFactory(outpost=outpost, hub=hub, flavor=small, user_id="1", status=status)
    # when the user starts a server of the flavor
    server, created = start(hub, outpost, user_id="1", flavor="small")
    # then it is admitted: only this Hub's user's active servers count
    assert created and server.flavor == small


def test_a_flavor_with_max_zero_is_closed(hub, outpost):
    FlavorFactory(outpost=outpost, name="small", max=0)
    with pytest.raises(StartRefused) as refused:
        start(hub, outpost, flavor="small", name="x")
    assert refused.value.message == (
        "x - Start with small for hub1 not allowed. Maximum (0) already reached."
    )


def test_caps_admit_up_to_their_value(hub, outpost):
    # given a flavor with max 2, per user 2, on an Outpost with 2 servers per user
    outpost.max_servers_per_user = 2
    outpost.save()
    FlavorFactory(outpost=outpost, name="small", max=2, max_per_user=2)
    # when one user starts two servers
    starts = [start(hub, outpost, flavor="small", name=name) for name in ("a", "b")]
    # then both are admitted, and a third is not
    assert all(created for _, created in starts)
    with pytest.raises(StartRefused):
        start(hub, outpost, flavor="small", name="c")


@pytest.mark.parametrize("state", ["draining", "disabled"])
def test_an_outpost_that_winds_down_admits_no_start(hub, outpost, state):
    FlavorFactory(outpost=outpost, name="small")
    outpost.state = state
    outpost.save()
    with pytest.raises(StartRefused) as refused:
        start(hub, outpost, flavor="small", name="x")
    assert refused.value.message == f"x - Outpost local is {state} and accepts no starts."
    assert not Server.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_admission_needs_the_callers_transaction(hub, outpost):
    # Its lock must last until the server is inserted, in the same transaction.
    with pytest.raises(AssertionError, match=r"^flavor_admit needs a transaction$"):
        flavor_admit(hub=hub, outpost=outpost, flavor_name=None, server_name="", user_id="1")
