"""flavors/resolution.py decides flavor access; the flavor list, userflavors and admission
all ask it, so they must give the same answer."""

from datetime import timedelta

import pytest

from flavors.models import Flavor
from flavors.resolution import (
    EffectiveFlavor,
    Layers,
    PolicyTerms,
    ProjectTerms,
    RuleTerms,
    flavors_resolve,
)
from outposts.errors import StartRefused
from outposts.models import Hub, Outpost
from outposts.services import StartRequest, server_start
from tests.factories import FlavorFactory
from tests.support.api import send

HUB = Hub(name="hub1")


def flavor(name: str, weight: int = 0, **fields) -> Flavor:
    """A flavor row as the database would give it (resolution reads no database)."""
    return Flavor(
        pk=abs(hash(name)) % 10_000, name=name, display_name=name, weight=weight, **fields
    )


def resolve(state: str = Outpost.State.ACTIVE, flavors=()):
    return flavors_resolve(outpost=Outpost(slug="hpc", state=state), flavors=flavors, hub=HUB)


def test_flavors_come_highest_weight_first_then_by_name():
    resolution = resolve(flavors=[flavor("b", 1), flavor("c", 5), flavor("a", 1)])
    assert [f.name for f in resolution.flavors] == ["c", "a", "b"]
    assert resolution.default.name == "c"
    assert resolution.names == ["a", "b", "c"]
    assert resolution.refusal is None


def test_a_flavor_is_found_by_name_only():
    resolution = resolve(flavors=[flavor("small"), flavor("large")])
    assert resolution.named("large").name == "large"
    assert resolution.named("medium") is None


def test_the_effective_flavor_carries_the_flavors_settings():
    row = flavor("gpu", 3, description="One GPU", max=4, max_per_user=1, runtime=timedelta(hours=1))
    row.resources = {"extra_resource_limits": {"nvidia.com/gpu": 1}}
    (effective,) = resolve(flavors=[row]).flavors
    assert effective == EffectiveFlavor(
        flavor_id=row.pk,
        name="gpu",
        display_name="gpu",
        description="One GPU",
        weight=3,
        max=4,
        max_per_user=1,
        runtime=timedelta(hours=1),
        resources={"extra_resource_limits": {"nvidia.com/gpu": 1}},
    )
    assert effective.frozen_settings()["runtime_seconds"] == 3600


def test_without_flavors_there_is_no_default():
    resolution = resolve(flavors=[])
    assert (resolution.flavors, resolution.default, resolution.names) == ((), None, [])


@pytest.mark.parametrize(
    ("state", "listed", "refusal"),
    [
        (Outpost.State.ACTIVE, ["small"], None),
        (Outpost.State.DRAINING, ["small"], "Outpost hpc is draining and accepts no starts."),
        (Outpost.State.DISABLED, [], "Outpost hpc is disabled and accepts no starts."),
    ],
)
def test_the_outposts_state_decides_what_is_listed_and_whether_starts_are_admitted(
    state, listed, refusal
):
    resolution = resolve(state, flavors=[flavor("small")])
    assert [f.name for f in resolution.flavors] == listed
    assert resolution.refusal == refusal


# --- One answer for listing, userflavors and admission --------------------------------------


def admitted(hub, outpost, name: str | None) -> bool:
    request = StartRequest(
        name=f"try-{name}",
        env={"JUPYTERHUB_USER": "ada", "JUPYTERHUB_USER_ID": "1"},
        flavor=name,
        authentication={"name": "ada"},
    )
    try:
        server, _ = server_start(hub=hub, outpost=outpost, request=request)
    except StartRefused:
        return False
    return server.flavor.name if server.flavor else True


@pytest.mark.django_db
@pytest.mark.parametrize("state", list(Outpost.State))
def test_listing_userflavors_and_admission_agree_for_the_same_hub(hub_client, hub, outpost, state):
    # given an Outpost with three flavors, in one of its states
    for name, weight in (("small", 1), ("large", 5), ("gpu", 3)):
        FlavorFactory(outpost=outpost, name=name, weight=weight)
    outpost.state = state
    outpost.save()
    # when the Hub lists its flavors, asks for one user's, and starts each flavor
    listed = list(hub_client.get("/outposts/local/flavors").json())
    for_user = list(send(hub_client, "POST", "/outposts/local/userflavors", {"name": "ada"}).json())
    starts = {name: admitted(hub, outpost, name) for name in ("small", "large", "gpu", "tiny")}
    default = admitted(hub, outpost, None)
    # then all three give one answer: what is listed (highest weight first) can be started
    # wherever starts are admitted at all, and nothing else can
    assert listed == for_user
    if state == Outpost.State.ACTIVE:
        assert listed == ["large", "gpu", "small"]
        assert starts == {"small": "small", "large": "large", "gpu": "gpu", "tiny": False}
        assert default == "large"
    else:
        assert listed == ([] if state == Outpost.State.DISABLED else ["large", "gpu", "small"])
        assert not any(starts.values()) and not default


def test_a_flavor_without_runtime_freezes_none():
    (effective,) = resolve(flavors=[flavor("open", runtime=None)]).flavors
    assert effective.frozen_settings() == {
        "display_name": "open",
        "description": "",
        "runtime_seconds": None,
        "resources": {},
    }


# --- Layers: the Hub's policy, then the best-matching user rule ----------------------------

SMALL, LARGE, GPU = flavor("small", 1), flavor("large", 5, max=10), flavor("gpu", 3, max=4)
OUTPOST_FLAVORS = [SMALL, LARGE, GPU]
OTHER_HUB = Hub(pk=2, name="hub2")
HUB.pk = 1


def layered(*, policies=(), rules=(), authentication=None, hub=HUB):
    return flavors_resolve(
        outpost=Outpost(slug="hpc"),
        flavors=OUTPOST_FLAVORS,
        hub=hub,
        layers=Layers(policies=tuple(policies), rules=tuple(rules)),
        authentication=authentication,
    )


def names(resolution) -> list[str]:
    return [f.name for f in resolution.flavors]


def rule(name="r", attributes=None, **fields) -> RuleTerms:
    return RuleTerms(name=name, attributes=attributes or {"groups": ["staff"]}, **fields)


STAFF = {"name": "ada", "groups": ["staff"]}
STUDENT = {"name": "bob", "groups": ["students"]}


def test_a_hub_without_policies_gets_every_flavor_as_it_is():
    resolution = layered()
    assert names(resolution) == ["large", "gpu", "small"]
    assert resolution.left_out == () and resolution.rule is None
    assert resolution.named("large") == EffectiveFlavor.of(LARGE)


def test_a_hubs_policies_are_its_allow_list_with_its_overrides_and_cap():
    resolution = layered(
        policies=[
            PolicyTerms(LARGE.pk, cap=3, overrides={"runtime": {"hours": 4}, "max_per_user": 1}),
            PolicyTerms(GPU.pk, allowed=False),
        ]
    )
    assert names(resolution) == ["large"]
    large = resolution.named("large")
    assert (large.hub_cap, large.max, large.runtime, large.max_per_user) == (
        3,
        10,
        timedelta(hours=4),
        1,
    )
    assert large.decided_by == ("policy of Hub hub1",)
    assert resolution.left_out == (  # in list order, highest weight first
        ("gpu", "Hub hub1: its policy does not allow it"),
        ("small", "Hub hub1: no policy allows it"),
    )


def test_without_authentication_or_a_matching_rule_the_user_gets_the_hubs_answer():
    rules = [rule(forbidden=True)]
    assert names(layered(rules=rules)) == names(layered())
    assert names(layered(rules=rules, authentication={})) == names(layered())
    assert names(layered(rules=rules, authentication=STUDENT)) == names(layered())
    assert layered(rules=rules, authentication=STAFF).flavors == ()


def test_a_forbidding_rule_leaves_no_flavor_and_says_so():
    resolution = layered(rules=[rule("banned", forbidden=True)], authentication=STAFF)
    assert resolution.rule == "banned"
    assert resolution.left_out == tuple(
        (name, "rule banned forbids all flavors") for name in ("large", "gpu", "small")
    )


def test_a_rule_filters_and_overrides_on_top_of_the_hubs_overrides():
    # given a Hub policy overriding large's runtime and description, and a rule on top
    policies = [
        PolicyTerms(LARGE.pk, overrides={"runtime": {"hours": 4}, "description": "Course"}),
        PolicyTerms(SMALL.pk),
    ]
    staff = rule(
        "staff",
        flavor_ids=frozenset({LARGE.pk}),
        overrides={"large": {"runtime": {"hours": 8}, "resources": {"mem_limit": "8G"}}},
    )
    # when a staff user is resolved
    resolution = layered(policies=policies, rules=[staff], authentication=STAFF)
    # then only large is left, with the rule's runtime and the Hub's description
    assert names(resolution) == ["large"]
    large = resolution.named("large")
    assert (large.runtime, large.description, large.resources) == (
        timedelta(hours=8),
        "Course",
        {"mem_limit": "8G"},
    )
    assert large.decided_by == ("policy of Hub hub1", "rule staff")
    assert resolution.left_out == (
        ("gpu", "Hub hub1: no policy allows it"),
        ("small", "rule staff does not list it"),
    )


def test_the_hubs_policy_is_a_tenant_boundary_no_rule_can_widen():
    # given a Hub that may only use small, and a rule that lists gpu for staff
    policies = [PolicyTerms(SMALL.pk)]
    staff = rule("staff", flavor_ids=frozenset({GPU.pk, SMALL.pk}))
    # then staff still get small only
    assert names(layered(policies=policies, rules=[staff], authentication=STAFF)) == ["small"]


def test_a_negated_rule_applies_to_the_users_it_does_not_match():
    outsiders = rule("outsiders", negate=True, forbidden=True)
    assert layered(rules=[outsiders], authentication=STUDENT).flavors == ()
    assert names(layered(rules=[outsiders], authentication=STAFF)) == ["large", "gpu", "small"]


def test_the_heaviest_matching_rule_decides_and_on_a_tie_the_later_one():
    light = rule("light", weight=1, flavor_ids=frozenset({SMALL.pk}))
    heavy = rule("heavy", weight=5, flavor_ids=frozenset({LARGE.pk}))
    tie = rule("tie", weight=5, flavor_ids=frozenset({GPU.pk}))
    assert layered(rules=[heavy, light], authentication=STAFF).rule == "heavy"
    assert layered(rules=[light, heavy], authentication=STAFF).rule == "heavy"
    assert layered(rules=[heavy, tie], authentication=STAFF).rule == "tie"
    assert layered(rules=[tie, heavy], authentication=STAFF).rule == "heavy"
    # a heavier rule that does not match does not count
    unmatched = rule("admins", attributes={"groups": ["admins"]}, weight=99)
    assert layered(rules=[light, unmatched], authentication=STAFF).rule == "light"


def test_a_rule_for_some_hubs_does_not_apply_to_others():
    course_only = rule("course", hub_ids=frozenset({OTHER_HUB.pk}), forbidden=True)
    assert names(layered(rules=[course_only], authentication=STAFF)) == ["large", "gpu", "small"]
    assert layered(rules=[course_only], authentication=STAFF, hub=OTHER_HUB).flavors == ()


def test_every_overridable_field_is_overridden():
    overrides = {
        "display_name": "Large (course)",
        "description": "For the course",
        "weight": 7,
        "runtime": {"minutes": 90},
        "max_per_user": 3,
        "resources": {"cpu_limit": 4},
    }
    large = layered(policies=[PolicyTerms(LARGE.pk, overrides=overrides)]).named("large")
    assert (
        large.display_name,
        large.description,
        large.weight,
        large.runtime,
        large.max_per_user,
        large.resources,
    ) == ("Large (course)", "For the course", 7, timedelta(minutes=90), 3, {"cpu_limit": 4})


def test_overrides_can_lift_a_per_user_limit_and_reorder_by_weight():
    policies = [PolicyTerms(f.pk, overrides={"max_per_user": 2}) for f in OUTPOST_FLAVORS]
    lifted = rule("lifted", overrides={"small": {"max_per_user": None, "weight": 9}})
    resolution = layered(policies=policies, rules=[lifted], authentication=STAFF)
    assert names(resolution) == ["small", "large", "gpu"]
    assert [f.max_per_user for f in resolution.flavors] == [None, 2, 2]


def test_an_outpost_without_flavors_is_unrestricted_but_still_refuses_when_draining():
    assert resolve(flavors=[]).unrestricted
    draining = resolve(Outpost.State.DRAINING, flavors=[])
    assert draining.unrestricted and draining.refusal
    assert not resolve(flavors=[flavor("small")]).unrestricted


def test_the_state_message_is_part_of_the_refusal():
    outpost = Outpost(slug="hpc", state=Outpost.State.DRAINING, state_message="Back at 8:00.")
    resolution = flavors_resolve(outpost=outpost, flavors=[], hub=HUB)
    assert resolution.refusal == "Outpost hpc is draining and accepts no starts. Back at 8:00."


# --- Project grants: the last layer ----------------------------------------------------------


def project(**fields) -> ProjectTerms:
    return ProjectTerms(**{"id": 7, "name": "climate", "member": True, **fields})


def test_a_project_gives_its_member_the_granted_flavors_of_its_allocation():
    climate = project(
        allocated={LARGE.pk: 2, SMALL.pk: 9}, granted_ids=frozenset({LARGE.pk, GPU.pk})
    )
    resolution = layered_with(climate)
    assert names(resolution) == ["large"]
    assert resolution.named("large").project_cap == 2
    assert resolution.named("large").decided_by == ("project climate",)
    assert (resolution.project_id, resolution.project_refusal) == (7, None)
    assert resolution.left_out == (
        ("gpu", "project climate has no allocation of it"),
        ("small", "no live grant of it in project climate"),
    )


def test_a_non_member_or_an_unknown_project_gets_nothing_and_a_reason():
    outsider = layered_with(project(member=False), user_name="eve")
    assert outsider.flavors == () and outsider.project_id is None
    assert outsider.project_refusal == "eve of hub1 is not a member of project climate."
    unknown = layered_with(project(id=None, member=False))
    assert unknown.project_refusal == "There is no project climate here."


def test_a_project_never_widens_the_hubs_policy():
    climate = project(allocated={GPU.pk: 2}, granted_ids=frozenset({GPU.pk}))
    resolution = layered_with(climate, policies=[PolicyTerms(SMALL.pk)])
    assert resolution.flavors == ()


def layered_with(project_terms, *, policies=(), user_name="ann"):
    return flavors_resolve(
        outpost=Outpost(slug="hpc"),
        flavors=OUTPOST_FLAVORS,
        hub=HUB,
        layers=Layers(policies=tuple(policies), project=project_terms),
        user_name=user_name,
    )
