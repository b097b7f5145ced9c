"""Each process keeps an Outpost's flavor terms until the Outpost's token changes
(flavors/terms.py): every kind of write must change it, or another process would go on
resolving with what it read before."""

import pytest
from django.db import transaction

from flavors import terms
from flavors.models import Flavor, HubPolicy, UserRule
from flavors.selectors import flavor_resolution
from outposts.models import Outpost
from tests.factories import (
    FlavorFactory,
    HubFactory,
    HubPolicyFactory,
    OutpostFactory,
    UserRuleFactory,
)

STAFF = {"name": "olga", "groups": ["staff"]}


@pytest.fixture
def setting(db, outpost, hub):
    """An Outpost with three flavors, the Hub's policies on two of them, a rule for staff of
    every Hub that lists one, and a second Hub."""
    # Rules elsewhere first, so that the rule's id is not this Outpost's (a mix-up of the two
    # would go unseen).
    UserRuleFactory.create_batch(2, outpost=OutpostFactory(slug="spare"))
    small = FlavorFactory(outpost=outpost, name="small", weight=1)
    large = FlavorFactory(outpost=outpost, name="large", weight=2)
    huge = FlavorFactory(outpost=outpost, name="huge", weight=3)
    for flavor in (small, large):
        HubPolicyFactory(outpost=outpost, hub=hub, flavor=flavor, cap=4)
    rule = UserRuleFactory(
        outpost=outpost, name="staff", attributes={"groups": ["staff"]}, flavors=[small]
    )
    second = HubFactory(name="second", outposts=[outpost])
    return {"outpost": outpost, "hub": hub, "second": second, "rule": rule} | {
        flavor.name: flavor for flavor in (small, large, huge)
    }


def resolved(setting, authentication=None, *, hub="hub"):
    """What a request of another process resolves: the Outpost row read afresh."""
    outpost = Outpost.objects.get(pk=setting["outpost"].pk)
    return flavor_resolution(hub=setting[hub], outpost=outpost, authentication=authentication)


def from_the_database(setting, authentication=None):
    terms._kept.clear()
    return resolved(setting, authentication)


def edited(row, **fields):
    for name, value in fields.items():
        setattr(row, name, value)
    row.save()


def rule(setting):
    return UserRule.objects.get(pk=setting["rule"].pk)


def for_second_hub_only(setting):
    rule(setting).hubs.set([setting["second"]])


# Each: what changes, and what is done before the terms are first read (or None).
CHANGES = {
    "flavor added": (lambda s: FlavorFactory(outpost=s["outpost"], name="tiny", weight=0), None),
    "flavor edited": (lambda s: edited(Flavor.objects.get(pk=s["large"].pk), max=9), None),
    "flavor deleted": (lambda s: Flavor.objects.filter(pk=s["small"].pk).delete(), None),
    "policy added": (lambda s: HubPolicyFactory(hub=s["hub"], flavor=s["huge"]), None),
    "policy edited": (
        lambda s: edited(HubPolicy.objects.get(hub=s["hub"], flavor=s["small"]), cap=2),
        None,
    ),
    "policies deleted": (lambda s: HubPolicy.objects.filter(hub=s["hub"]).delete(), None),
    "rule added": (
        lambda s: UserRuleFactory(
            outpost=s["outpost"], attributes={"name": "olga"}, weight=5, forbidden=True
        ),
        None,
    ),
    "rule edited": (lambda s: edited(rule(s), forbidden=True), None),
    "rule deleted": (lambda s: rule(s).delete(), None),
    "rule's flavors set": (lambda s: rule(s).flavors.set([s["large"]]), None),
    "rule's flavors cleared": (lambda s: rule(s).flavors.clear(), None),
    "rule's Hubs set": (for_second_hub_only, None),
    "rule added to a Hub's": (lambda s: s["second"].user_rules.add(rule(s)), None),
    "rule removed from a Hub's": (
        lambda s: s["second"].user_rules.remove(rule(s)),
        for_second_hub_only,
    ),
    "a Hub's rules cleared": (lambda s: s["second"].user_rules.clear(), for_second_hub_only),
    "the rule's only Hub deleted": (lambda s: s["second"].delete(), for_second_hub_only),
    "a flavor's rules cleared": (lambda s: s["small"].user_rules.clear(), None),
}


@pytest.mark.parametrize(("change", "before_reading"), CHANGES.values(), ids=CHANGES.keys())
def test_every_change_of_the_terms_is_seen_by_the_next_reader(setting, change, before_reading):
    # given the terms kept by this process, for the Hub and for one of its staff
    if before_reading is not None:
        before_reading(setting)
    before = resolved(setting), resolved(setting, STAFF)
    # when the terms change
    change(setting)
    # then the next reader resolves what the database now says, which is not what it was
    after = resolved(setting), resolved(setting, STAFF)
    assert after == (from_the_database(setting), from_the_database(setting, STAFF))
    assert after != before


def test_a_reader_of_the_same_token_reads_nothing_again(setting, django_assert_num_queries):
    # given the terms read once
    first = resolved(setting, STAFF)
    outpost = Outpost.objects.get(pk=setting["outpost"].pk)
    # when read again under the same token
    with django_assert_num_queries(0):
        again = flavor_resolution(hub=setting["hub"], outpost=outpost, authentication=STAFF)
    # then the answer is the same
    assert again == first
    assert [flavor.name for flavor in again.flavors] == ["small"]


def test_each_outpost_keeps_its_own_terms(setting, hub):
    # given a second Outpost of the same Hub with other flavors
    elsewhere = OutpostFactory(slug="elsewhere")
    FlavorFactory(outpost=elsewhere, name="gpu")
    # when both are resolved, one after the other
    here = resolved(setting)
    there = flavor_resolution(hub=hub, outpost=Outpost.objects.get(pk=elsewhere.pk))
    # then each has its own flavors
    assert here.names == ["large", "small"] and there.names == ["gpu"]


def test_a_rolled_back_change_is_not_kept(setting):
    # given a change read inside its transaction, then rolled back
    with pytest.raises(RuntimeError), transaction.atomic():
        FlavorFactory(outpost=setting["outpost"], name="tiny", weight=0)
        assert "tiny" in resolved(setting, hub="second").names
        raise RuntimeError
    # when the terms are read again
    after = resolved(setting, hub="second")
    # then they are the database's, without the rolled-back flavor
    assert after.names == ["huge", "large", "small"]


def test_saving_an_outpost_read_before_a_change_keeps_the_new_token(setting):
    # given an Outpost row read before its flavors change
    stale = Outpost.objects.get(pk=setting["outpost"].pk)
    resolved(setting, hub="second")
    FlavorFactory(outpost=setting["outpost"], name="tiny", weight=0)
    # when that row is saved (an admin form, apply_config)
    stale.name = "Renamed"
    stale.save()
    # then the change is still seen
    assert "tiny" in resolved(setting, hub="second").names


def test_the_outpost_a_row_was_saved_with_holds_the_new_token(setting):
    # given the Outpost object a test or a service holds, its terms read
    outpost = setting["outpost"]
    flavor_resolution(hub=setting["second"], outpost=outpost)
    # when a flavor is added through it
    FlavorFactory(outpost=outpost, name="tiny", weight=0)
    # then the same object resolves the new flavor
    assert "tiny" in flavor_resolution(hub=setting["second"], outpost=outpost).names
