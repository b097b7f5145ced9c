from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from flavors.selectors import flavor_resolution
from flavors.services import flavor_admit
from outposts.errors import StartRefused
from outposts.models import Server
from outposts.runner.spawner import ServerSpec
from outposts.services import StartRequest, server_start
from tests.factories import (
    FlavorFactory,
    HubFactory,
    HubPolicyFactory,
    OutpostFactory,
    ServerFactory,
    UserRuleFactory,
)
from tests.support.api import send

pytestmark = pytest.mark.django_db


def start(hub, outpost, *, user_id="1", flavor=None, name="", start_id="s1", authentication=None):
    request = StartRequest(
        name=name,
        start_id=start_id,
        env={"JUPYTERHUB_USER_ID": user_id, "JUPYTERHUB_USER": f"user{user_id}"},
        flavor=flavor,
        authentication=authentication or {},
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


# --- Hub policies and user rules (issue 7) ---------------------------------------------------

HPC = {"name": "ada", "groups": ["hpc"]}


def test_a_full_hub_cap_names_the_hub_and_its_cap(hub, outpost):
    # given a flavor with room for 10, of which this Hub may have 1, and has it
    small = FlavorFactory(outpost=outpost, name="small", max=10)
    HubPolicyFactory(hub=hub, flavor=small, cap=1)
    ServerFactory(outpost=outpost, hub=hub, flavor=small)
    # when the Hub starts another one
    with pytest.raises(StartRefused) as refused:
        start(hub, outpost, flavor="small", name="x")
    # then it is refused with the Hub's cap, not the flavor's max
    assert refused.value.message == (
        "x - Start with small for hub1 not allowed. Maximum (1) already reached."
    )


def test_a_hub_cap_counts_only_that_hubs_servers(hub, outpost):
    # given a Hub with a cap of 2 on a flavor, and another Hub's 3 servers of it
    small = FlavorFactory(outpost=outpost, name="small")
    HubPolicyFactory(hub=hub, flavor=small, cap=2)
    other = HubFactory(name="hub2", outposts=[outpost])
    for _ in range(3):
        ServerFactory(outpost=outpost, hub=other, flavor=small)
    # when the Hub starts two servers, and a third
    starts = [start(hub, outpost, flavor="small", name=name) for name in ("a", "b")]
    with pytest.raises(StartRefused) as refused:
        start(hub, outpost, flavor="small", name="c")
    # then the two are admitted and the third meets the Hub's cap
    assert all(created for _, created in starts)
    assert refused.value.message == (
        "c - Start with small for hub1 not allowed. Maximum (2) already reached."
    )


def test_a_hub_at_its_cap_leaves_other_hubs_starting(hub, outpost):
    # given a flavor of which this Hub may have 1, and has it
    small = FlavorFactory(outpost=outpost, name="small", max=5)
    HubPolicyFactory(hub=hub, flavor=small, cap=1)
    start(hub, outpost, flavor="small", name="a")
    other = HubFactory(name="hub2", outposts=[outpost])
    # when this Hub and another one start the flavor
    with pytest.raises(StartRefused) as refused:
        start(hub, outpost, flavor="small", name="b")
    server, created = start(other, outpost, flavor="small", name="b")
    # then this Hub is refused, naming itself, and the other Hub's start is admitted
    assert refused.value.message == (
        "b - Start with small for hub1 not allowed. Maximum (1) already reached."
    )
    assert created and (server.hub, server.flavor) == (other, small)


def test_the_flavors_max_still_binds_a_hub_below_its_cap(hub, outpost):
    # given a flavor with max 2, of which this Hub may have 2, and another Hub's 2 servers
    small = FlavorFactory(outpost=outpost, name="small", max=2)
    HubPolicyFactory(hub=hub, flavor=small, cap=2)
    for _ in range(2):
        ServerFactory(outpost=outpost, hub=HubFactory(outposts=[outpost]), flavor=small)
    # when this Hub starts the flavor
    with pytest.raises(StartRefused) as refused:
        start(hub, outpost, flavor="small", name="x")
    # then the flavor's max is what is full
    assert refused.value.message == (
        "x - Start with small for hub1 not allowed. Maximum (2) already reached."
    )


def test_a_hub_policy_that_does_not_allow_a_flavor_lists_only_the_hubs_flavors(hub, outpost):
    # given an Outpost with three flavors, of which this Hub may use one: one flavor's policy
    # says no, the third has no policy
    small = FlavorFactory(outpost=outpost, name="small")
    large = FlavorFactory(outpost=outpost, name="large")
    FlavorFactory(outpost=outpost, name="gpu")
    HubPolicyFactory(hub=hub, flavor=small)
    HubPolicyFactory(hub=hub, flavor=large, allowed=False)
    # when the Hub starts each flavor it may not use
    messages = []
    for name in ("large", "gpu"):
        with pytest.raises(StartRefused) as refused:
            start(hub, outpost, flavor=name, name="x")
        messages.append(refused.value.message)
    # then each is refused, listing only the Hub's flavor
    assert messages == [
        "x - Start with flavor large not allowed. Allowed values for user: ['small']",
        "x - Start with flavor gpu not allowed. Allowed values for user: ['small']",
    ]
    assert not Server.objects.exists()


def test_a_hub_without_policies_keeps_every_flavor_while_another_has_policies(hub, outpost):
    # given another Hub that may use only small
    small = FlavorFactory(outpost=outpost, name="small")
    FlavorFactory(outpost=outpost, name="large")
    HubPolicyFactory(hub=HubFactory(name="hub2", outposts=[outpost]), flavor=small)
    # when this Hub starts large
    server, created = start(hub, outpost, flavor="large")
    # then it may: the other Hub's policy is not this Hub's
    assert created and server.flavor.name == "large"


def test_a_user_rule_that_forbids_allows_no_flavor(hub, outpost):
    # given a rule forbidding every flavor to the group hpc
    FlavorFactory(outpost=outpost, name="small")
    UserRuleFactory(outpost=outpost, attributes={"groups": ["hpc"]}, forbidden=True)
    # when a user of that group starts, and one of another group
    with pytest.raises(StartRefused) as refused:
        start(hub, outpost, flavor="small", name="x", authentication=HPC)
    server, created = start(hub, outpost, flavor="small", authentication={"groups": ["web"]})
    # then the first is refused with an empty list; the rule does not decide for the other
    assert refused.value.message == (
        "x - Start with flavor small not allowed. Allowed values for user: []"
    )
    assert created and server.flavor.name == "small"


def test_a_user_rule_cannot_give_a_flavor_the_hub_may_not_use(hub, outpost):
    # given a Hub that may use only small, and a rule that lists only large
    small = FlavorFactory(outpost=outpost, name="small")
    large = FlavorFactory(outpost=outpost, name="large")
    HubPolicyFactory(hub=hub, flavor=small)
    UserRuleFactory(outpost=outpost, attributes={"groups": ["hpc"]}, flavors=[large])
    # when a user the rule decides for starts large
    with pytest.raises(StartRefused) as refused:
        start(hub, outpost, flavor="large", name="x", authentication=HPC)
    # then it is refused: the rule filters the Hub's flavors, it cannot add to them
    assert refused.value.message == (
        "x - Start with flavor large not allowed. Allowed values for user: []"
    )


def test_a_user_rule_of_another_hub_does_not_decide_for_this_hub(hub, outpost):
    # given a rule forbidding every flavor to the group hpc of another Hub
    FlavorFactory(outpost=outpost, name="small")
    other = HubFactory(name="hub2", outposts=[outpost])
    UserRuleFactory(outpost=outpost, attributes={"groups": ["hpc"]}, forbidden=True, hubs=[other])
    # when a user of that group starts on this Hub, and on the other
    server, created = start(hub, outpost, flavor="small", authentication=HPC)
    with pytest.raises(StartRefused) as refused:
        start(other, outpost, flavor="small", name="x", authentication=HPC)
    # then only the other Hub's user is refused
    assert created and server.flavor.name == "small"
    assert refused.value.message.endswith("Allowed values for user: []")


@pytest.mark.parametrize(
    ("layer", "authentication"),
    [("policy", None), ("rule", HPC)],
    ids=["hub policy", "user rule"],
)
def test_an_overridden_max_per_user_is_the_one_admission_counts(
    hub, outpost, layer, authentication
):
    # given a flavor of 1 per user, which a Hub policy or a user rule raises to 2
    small = FlavorFactory(outpost=outpost, name="small", max_per_user=1)
    if layer == "policy":
        HubPolicyFactory(hub=hub, flavor=small, overrides={"max_per_user": 2})
    else:
        UserRuleFactory(
            outpost=outpost,
            attributes={"groups": ["hpc"]},
            overrides={"small": {"max_per_user": 2}},
        )
    # when the user starts three servers of it
    starts = [
        start(hub, outpost, flavor="small", name=name, authentication=authentication)
        for name in ("a", "b")
    ]
    with pytest.raises(StartRefused) as refused:
        start(hub, outpost, flavor="small", name="c", authentication=authentication)
    # then two are admitted and the third is refused with the overridden number
    assert all(created for _, created in starts)
    assert refused.value.message == (
        "c - Start with flavor small not allowed. Each user may only start 2 of small"
    )


def test_a_user_rule_overrides_max_per_user_only_for_the_users_it_decides_for(hub, outpost):
    # given a flavor of 1 per user, which a rule raises to 2 for the group hpc
    FlavorFactory(outpost=outpost, name="small", max_per_user=1)
    UserRuleFactory(
        outpost=outpost, attributes={"groups": ["hpc"]}, overrides={"small": {"max_per_user": 2}}
    )
    web = {"name": "bob", "groups": ["web"]}
    start(hub, outpost, user_id="2", flavor="small", name="a", authentication=web)
    # when a user of another group starts a second one
    with pytest.raises(StartRefused) as refused:
        start(hub, outpost, user_id="2", flavor="small", name="b", authentication=web)
    # then the flavor's own limit applies to them
    assert refused.value.message == (
        "b - Start with flavor small not allowed. Each user may only start 1 of small"
    )


@pytest.mark.parametrize("flavor", ["gpu", None], ids=["naming a flavor", "naming none"])
def test_an_outpost_without_flavors_admits_a_start_whatever_flavor_it_names(hub, outpost, flavor):
    # when a start on an Outpost without flavors names a flavor, or none
    server, created = start(hub, outpost, flavor=flavor)
    # then it is admitted, without a flavor or a runtime
    assert created
    server.refresh_from_db()
    assert (server.flavor, server.flavor_settings, server.runtime) == (None, {}, None)


def test_an_outpost_without_flavors_still_has_its_per_user_limit(hub, outpost):
    # given an Outpost without flavors that allows 1 server per user
    outpost.max_servers_per_user = 1
    outpost.save()
    start(hub, outpost, flavor="gpu", name="a")
    # when the user starts a second one
    with pytest.raises(StartRefused) as refused:
        start(hub, outpost, flavor="gpu", name="b")
    # then it is refused with the per-user message
    assert refused.value.message == (
        "b - User with user id 1 of hub1 has reached the maximum limit of services (1)"
    )


def test_the_frozen_settings_carry_the_hub_policys_then_the_user_rules_overrides(hub, outpost):
    # given a flavor, the Hub's overrides of it, and a rule's overrides on top for hpc
    small = FlavorFactory(
        outpost=outpost,
        name="small",
        display_name="Small",
        description="1 CPU",
        runtime=timedelta(hours=2),
        resources={"mem_limit": "2G"},
    )
    HubPolicyFactory(
        hub=hub,
        flavor=small,
        overrides={
            "display_name": "Small (course)",
            "runtime": {"hours": 4},
            "resources": {"mem_limit": "4G"},
        },
    )
    UserRuleFactory(
        outpost=outpost,
        attributes={"groups": ["hpc"]},
        overrides={"small": {"runtime": {"hours": 8}, "description": "1 CPU, long"}},
    )
    # when a user of hpc and one of another group start it
    ruled, _ = start(hub, outpost, flavor="small", name="a", authentication=HPC)
    hubs, _ = start(hub, outpost, user_id="2", flavor="small", authentication={"groups": []})
    # then each server keeps what it was admitted with: the Hub's overrides, and for hpc the
    # rule's on top of them
    ruled.refresh_from_db()
    hubs.refresh_from_db()
    assert ruled.flavor_settings == {
        "display_name": "Small (course)",
        "description": "1 CPU, long",
        "runtime_seconds": 8 * 3600.0,
        "resources": {"mem_limit": "4G"},
    }
    assert hubs.flavor_settings == {
        "display_name": "Small (course)",
        "description": "1 CPU",
        "runtime_seconds": 4 * 3600.0,
        "resources": {"mem_limit": "4G"},
    }
    assert (ruled.runtime, hubs.runtime) == (timedelta(hours=8), timedelta(hours=4))
    assert ServerSpec.from_server(ruled).trait_values["mem_limit"] == "4G"


def test_a_hubs_policies_on_another_outpost_do_not_restrict_it_here(hub, outpost):
    # given a Hub that may use only gpu on another Outpost, and no policy here
    elsewhere = OutpostFactory(slug="elsewhere")
    hub.outposts.add(elsewhere)
    HubPolicyFactory(hub=hub, flavor=FlavorFactory(outpost=elsewhere, name="gpu"))
    FlavorFactory(outpost=outpost, name="small")
    # when it starts a flavor here
    server, created = start(hub, outpost, flavor="small")
    # then it is admitted
    assert created and server.flavor.name == "small"


def test_of_two_matching_rules_the_heavier_decides_even_when_listed_first(hub, outpost):
    # given a heavy rule listing only large, then a light one listing only small, both for hpc
    small = FlavorFactory(outpost=outpost, name="small")
    large = FlavorFactory(outpost=outpost, name="large")
    hpc = {"groups": ["hpc"]}
    UserRuleFactory(
        outpost=outpost, name="heavy", position=1, weight=5, attributes=hpc, flavors=[large]
    )
    UserRuleFactory(
        outpost=outpost, name="light", position=2, weight=0, attributes=hpc, flavors=[small]
    )
    # when a user of hpc starts small
    with pytest.raises(StartRefused) as refused:
        start(hub, outpost, flavor="small", name="x", authentication=HPC)
    # then the heavy rule decided (the admin's preview names it)
    assert refused.value.message == (
        "x - Start with flavor small not allowed. Allowed values for user: ['large']"
    )
    assert flavor_resolution(hub=hub, outpost=outpost, authentication=HPC).rule == "heavy"


def test_of_two_matching_rules_of_equal_weight_the_later_one_decides(hub, outpost):
    # given two rules of equal weight for hpc: the first lists only large, the later only small
    small = FlavorFactory(outpost=outpost, name="small")
    large = FlavorFactory(outpost=outpost, name="large")
    hpc = {"groups": ["hpc"]}
    UserRuleFactory(outpost=outpost, name="later", position=2, attributes=hpc, flavors=[small])
    UserRuleFactory(outpost=outpost, name="first", position=1, attributes=hpc, flavors=[large])
    # when a user of hpc starts large
    with pytest.raises(StartRefused) as refused:
        start(hub, outpost, flavor="large", name="x", authentication=HPC)
    # then the rule later in the list decided
    assert refused.value.message == (
        "x - Start with flavor large not allowed. Allowed values for user: ['small']"
    )


def test_a_negated_rule_decides_for_the_users_it_does_not_match(hub, outpost):
    # given a rule forbidding every flavor to whoever is not in hpc
    FlavorFactory(outpost=outpost, name="small")
    UserRuleFactory(outpost=outpost, attributes={"groups": ["hpc"]}, negate=True, forbidden=True)
    # when a user of web starts, and one of hpc
    with pytest.raises(StartRefused) as refused:
        start(hub, outpost, flavor="small", name="x", authentication={"groups": ["web"]})
    server, created = start(hub, outpost, user_id="2", flavor="small", authentication=HPC)
    # then only the user of web is refused
    assert refused.value.message.endswith("Allowed values for user: []")
    assert created and server.flavor.name == "small"


def test_admission_reads_the_rules_in_the_same_queries_however_many_there_are(hub, outpost):
    # given one rule with its Hubs and flavors
    small = FlavorFactory(outpost=outpost, name="small")

    def add_rule(n: int) -> None:
        UserRuleFactory(
            outpost=outpost,
            name=f"rule{n}",
            attributes={"name": f"u{n}"},
            hubs=[hub],
            flavors=[small],
        )

    def queries_of_a_start(n: int) -> int:
        with CaptureQueriesContext(connection) as queries:
            start(
                hub,
                outpost,
                user_id=str(n),
                flavor="small",
                name=f"s{n}",
                authentication={"name": "ada"},
            )
        return len(queries)

    add_rule(0)
    with_one = queries_of_a_start(1)
    # when there are ten
    for n in range(1, 10):
        add_rule(n)
    # then a start costs the same queries: admission runs with the Outpost locked
    assert queries_of_a_start(2) == with_one


def test_what_flavors_says_a_hub_may_still_start_is_what_admission_admits(hub_client, hub, outpost):
    # given small (max 5), of which this Hub may have 3 and has 1, another Hub 1;
    # and large (max 4), of which this Hub may have 3 and has none, another Hub 3
    small = FlavorFactory(outpost=outpost, name="small", max=5, weight=2)
    large = FlavorFactory(outpost=outpost, name="large", max=4, weight=1)
    other = HubFactory(name="hub2", outposts=[outpost])
    for flavor in (small, large):
        HubPolicyFactory(hub=hub, flavor=flavor, cap=3)
        ServerFactory(outpost=outpost, hub=hub, flavor=flavor, status=Server.Status.STOPPED)
    ServerFactory(outpost=outpost, hub=hub, flavor=small)
    ServerFactory(outpost=outpost, hub=other, flavor=small)
    for _ in range(3):
        ServerFactory(outpost=outpost, hub=other, flavor=large)
    # when the Hub reads its flavors
    answer = hub_client.get("/outposts/local/flavors/").json()
    # then each says the limit with least room: the Hub's cap of small, large's max
    assert {name: (f["max"], f["current"]) for name, f in answer.items()} == {
        "small": (3, 1),
        "large": (4, 4 - 1),
    }
    # and the Hub can start exactly max - current of each
    for name, room, cap in (("small", 2, 3), ("large", 1, 4)):
        for n in range(room):
            _, created = start(hub, outpost, flavor=name, name=f"{name}{n}", user_id=str(10 + n))
            assert created
        with pytest.raises(StartRefused) as refused:
            start(hub, outpost, flavor=name, name="one-more", user_id="99")
        assert refused.value.message == (
            f"one-more - Start with {name} for hub1 not allowed. Maximum ({cap}) already reached."
        )


def test_what_userflavors_says_a_user_may_still_start_is_what_admission_admits(
    hub_client, hub, outpost
):
    # given small (1 per user), which a rule raises to 3 for hpc; a user of hpc with one
    # active and one ended server, another user's server and the same user id on another Hub
    small = FlavorFactory(outpost=outpost, name="small", max_per_user=1)
    UserRuleFactory(
        outpost=outpost, attributes={"groups": ["hpc"]}, overrides={"small": {"max_per_user": 3}}
    )
    ServerFactory(outpost=outpost, hub=hub, flavor=small, user_id="1")
    ServerFactory(outpost=outpost, hub=hub, flavor=small, user_id="1", status=Server.Status.FAILED)
    ServerFactory(outpost=outpost, hub=hub, flavor=small, user_id="2")
    ServerFactory(outpost=outpost, hub=HubFactory(outposts=[outpost]), flavor=small, user_id="1")
    # when the Hub asks for the flavors of the user, and of no user in particular
    path = "/outposts/local/userflavors"
    for_user = send(hub_client, "POST", path + "?user_id=1", HPC).json()["small"]
    for_anyone = send(hub_client, "POST", path, HPC).json()["small"]
    # then the user's own count is against the rule's max_per_user
    assert (for_user["maxPerUser"], for_user["currentPerUser"], for_user["current"]) == (3, 1, 3)
    assert "currentPerUser" not in for_anyone
    # and the user can start exactly maxPerUser - currentPerUser more
    for name in ("a", "b"):
        _, created = start(hub, outpost, flavor="small", name=name, authentication=HPC)
        assert created
    with pytest.raises(StartRefused) as refused:
        start(hub, outpost, flavor="small", name="c", authentication=HPC)
    assert refused.value.message == (
        "c - Start with flavor small not allowed. Each user may only start 3 of small"
    )


def test_listing_userflavors_and_starts_agree_under_hub_policies_and_user_rules(
    hub_client, hub, outpost
):
    # given three flavors, of which the Hub may use two, and a rule giving hpc only large
    small = FlavorFactory(outpost=outpost, name="small", weight=1)
    large = FlavorFactory(outpost=outpost, name="large", weight=2)
    gpu = FlavorFactory(outpost=outpost, name="gpu", weight=3)
    HubPolicyFactory(hub=hub, flavor=small)
    HubPolicyFactory(hub=hub, flavor=large)
    HubPolicyFactory(hub=hub, flavor=gpu, allowed=False)
    UserRuleFactory(outpost=outpost, attributes={"groups": ["hpc"]}, flavors=[large])
    web = {"groups": ["web"]}
    # when the Hub lists its flavors, asks for two users', and the users start each flavor
    listed = list(hub_client.get("/outposts/local/flavors/").json())
    for_hpc = list(send(hub_client, "POST", "/outposts/local/userflavors", HPC).json())
    for_web = list(send(hub_client, "POST", "/outposts/local/userflavors", web).json())

    def admitted(authentication, user_id):
        names = []
        for name in ("small", "large", "gpu"):
            try:
                start(
                    hub,
                    outpost,
                    user_id=user_id,
                    flavor=name,
                    name=name,
                    start_id=f"{user_id}-{name}",
                    authentication=authentication,
                )
            except StartRefused:
                continue
            names.append(name)
        return names

    # then each answer is what that user can start
    assert listed == for_web == ["large", "small"]
    assert for_hpc == ["large"]
    assert admitted(HPC, "1") == ["large"]
    assert admitted(web, "2") == ["small", "large"]


def test_a_hub_policys_weight_decides_which_flavor_a_start_without_a_name_gets(hub, outpost):
    # given small outweighed by large, which the Hub's policy puts first
    small = FlavorFactory(outpost=outpost, name="small", weight=1)
    large = FlavorFactory(outpost=outpost, name="large", weight=5)
    HubPolicyFactory(hub=hub, flavor=small, overrides={"weight": 10})
    HubPolicyFactory(hub=hub, flavor=large)
    # when a start names no flavor
    server, _ = start(hub, outpost)
    # then it gets the flavor the Hub weighs highest
    assert server.flavor == small


def test_a_draining_outposts_refusal_carries_its_message(hub, outpost):
    # given a draining Outpost that says why
    FlavorFactory(outpost=outpost, name="small")
    outpost.state = "draining"
    outpost.state_message = "Maintenance until Monday."
    outpost.save()
    # when a user starts
    with pytest.raises(StartRefused) as refused:
        start(hub, outpost, flavor="small", name="x")
    # then the refusal says it too
    assert refused.value.message == (
        "x - Outpost local is draining and accepts no starts. Maintenance until Monday."
    )
