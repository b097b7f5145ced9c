"""Project grants as the last layer of flavor resolution, and the project's allocation as one
more limit of admission (architecture.md §Flavors; issue "HPC projects")."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone

from flavors.models import HubPolicy
from outposts.models import Server
from outposts.services import StartRequest
from tests.factories import (
    AllocationFactory,
    FlavorFactory,
    GrantFactory,
    MemberFactory,
    ProjectFactory,
    ServerFactory,
)
from tests.support.api import ASYNC, BASE, send, start_body
from tests.support.concurrency import starts_at_once


def start(client, n: int, *, user: str, flavor: str, project: str | None):
    body = start_body(name=f"s{n}", start_id=str(n), user_id=str(n))
    body["env"]["JUPYTERHUB_USER"] = user
    body["user_options"]["flavor"] = flavor
    if project is not None:
        body["user_options"]["project"] = project
    return send(client, "POST", BASE + "services", body, headers=ASYNC)


def refusal(response) -> str:
    assert response.status_code == 419, response.content
    return response.json()["args"][0]


@pytest.fixture
def climate(outpost, hub):
    """Project climate on the Outpost: 2 servers of large allocated, and small; ann (of hub1)
    is a member granted large; bob is a member without grants."""
    small = FlavorFactory(outpost=outpost, name="small", weight=1)
    large = FlavorFactory(outpost=outpost, name="large", weight=5)
    FlavorFactory(outpost=outpost, name="gpu", weight=9)
    project = ProjectFactory(outpost=outpost, name="climate")
    AllocationFactory(project=project, flavor=large, max_servers=2)
    AllocationFactory(project=project, flavor=small, max_servers=10)
    ann = MemberFactory(project=project, hub=hub, user_name="ann")
    MemberFactory(project=project, hub=hub, user_name="bob")
    GrantFactory(member=ann, flavor=large)
    return project


@pytest.mark.django_db
def test_a_member_starts_a_granted_flavor_and_the_server_counts_for_the_project(
    climate, hub_client
):
    response = start(hub_client, 1, user="ann", flavor="large", project="climate")
    assert response.status_code == 202
    assert Server.objects.get(name="s1").project == climate


@pytest.mark.django_db
def test_a_non_member_is_refused_with_a_message_that_says_so(climate, hub_client):
    assert refusal(start(hub_client, 1, user="eve", flavor="large", project="climate")) == (
        "s1 - eve of hub1 is not a member of project climate."
    )
    assert refusal(start(hub_client, 2, user="ann", flavor="large", project="nope")) == (
        "s2 - There is no project nope here."
    )


@pytest.mark.django_db
def test_only_granted_and_allocated_flavors_may_be_started(climate, hub_client):
    # bob holds no grant; ann's grant is of large only
    assert refusal(start(hub_client, 1, user="bob", flavor="large", project="climate")) == (
        "s1 - Start with flavor large not allowed. Allowed values for user: []"
    )
    assert refusal(start(hub_client, 2, user="ann", flavor="small", project="climate")) == (
        "s2 - Start with flavor small not allowed. Allowed values for user: ['large']"
    )


@pytest.mark.django_db
def test_an_expired_grant_is_no_grant(climate, hub_client):
    climate.members.get(user_name="ann").grants.update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )
    assert "Allowed values for user: []" in refusal(
        start(hub_client, 1, user="ann", flavor="large", project="climate")
    )


@pytest.mark.django_db
def test_the_allocation_is_a_limit_of_its_own(climate, hub, hub_client):
    # given a second member granted large: the allocation of 2 is shared
    cem = MemberFactory(project=climate, hub=hub, user_name="cem")
    GrantFactory(member=cem, flavor=climate.allocations.get(flavor__name="large").flavor)
    assert start(hub_client, 1, user="ann", flavor="large", project="climate").status_code == 202
    assert start(hub_client, 2, user="cem", flavor="large", project="climate").status_code == 202
    assert refusal(start(hub_client, 3, user="cem", flavor="large", project="climate")) == (
        "s3 - Start with large for project climate not allowed. Its allocation (2) is in use."
    )
    # outside the project, large is the Hub's as before
    assert start(hub_client, 4, user="cem", flavor="large", project=None).status_code == 202


@pytest.mark.django_db
def test_the_hubs_policy_still_bounds_what_a_project_gives(climate, outpost, hub, hub_client):
    HubPolicy.objects.create(
        outpost=outpost, hub=hub, flavor=climate.allocations.get(flavor__name="small").flavor
    )
    assert "Allowed values for user: []" in refusal(
        start(hub_client, 1, user="ann", flavor="large", project="climate")
    )


@pytest.mark.django_db
def test_userflavors_with_a_project_answers_what_its_grants_allow(climate, hub_client):
    ann = send(hub_client, "POST", BASE + "userflavors", {"name": "ann", "project": "climate"})
    bob = send(hub_client, "POST", BASE + "userflavors", {"name": "bob", "project": "climate"})
    plain = send(hub_client, "POST", BASE + "userflavors", {"name": "ann"})
    assert list(ann.json()) == ["large"]
    assert bob.json() == {}
    assert list(plain.json()) == ["gpu", "large", "small"]


@pytest.mark.django_db
def test_an_outpost_without_projects_takes_the_name_as_an_account_only(outpost, hub_client):
    FlavorFactory(outpost=outpost, name="small")
    assert start(hub_client, 1, user="ann", flavor="small", project="acct42").status_code == 202
    assert Server.objects.get(name="s1").project is None


@pytest.mark.django_db
def test_only_a_flavor_of_the_allocation_can_be_granted(climate, outpost):
    gpu = outpost.flavors.get(name="gpu")
    grant = GrantFactory.build(member=climate.members.get(user_name="bob"), flavor=gpu)
    with pytest.raises(ValidationError, match="has no allocation of gpu"):
        grant.full_clean()


@pytest.mark.django_db(transaction=True)
def test_200_simultaneous_starts_against_an_allocation_of_5_admit_exactly_5(outpost, hub):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL's row locks and real concurrent connections")
    # given a project with 5 servers of large, and 40 members granted it
    large = FlavorFactory(outpost=outpost, name="large")
    project = ProjectFactory(outpost=outpost, name="climate")
    AllocationFactory(project=project, flavor=large, max_servers=5)
    for n in range(40):
        GrantFactory(
            member=MemberFactory(project=project, hub=hub, user_name=f"u{n}"), flavor=large
        )
    starts = [
        (
            hub,
            StartRequest(
                name=f"s{n}",
                start_id=str(n),
                env={"JUPYTERHUB_USER": f"u{n % 40}", "JUPYTERHUB_USER_ID": str(n)},
                user_options={"flavor": "large", "project": "climate"},
            ),
        )
        for n in range(200)
    ]
    # when the members send 200 starts at the same moment
    outcomes = starts_at_once(outpost=outpost, starts=starts)
    # then exactly 5 are admitted, and the others refused for the allocation
    assert [outcome.error for outcome in outcomes if outcome.error] == []
    admitted = [outcome.server_id for outcome in outcomes if outcome.server_id]
    assert len(admitted) == 5
    assert {outcome.refusal.split(" - ", 1)[1] for outcome in outcomes if outcome.refusal} == {
        "Start with large for project climate not allowed. Its allocation (5) is in use."
    }
    assert Server.objects.active().filter(project=project).count() == 5


@pytest.mark.django_db
def test_a_project_over_its_flavor_hours_for_the_month_is_refused(
    climate, hub, hub_client, monkeypatch
):
    # given the middle of a month (whatever day the test runs on), at an odd time of day
    month_start = timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    now = month_start + timedelta(days=14, hours=13, minutes=37, seconds=12, microseconds=5)
    monkeypatch.setattr(timezone, "now", lambda: now)
    # and large allocated with 10 flavor-hours a month, 9.5 of them used by ann's servers
    allocation = climate.allocations.get(flavor__name="large")
    allocation.hours_per_month = 10
    allocation.save()
    used = ServerFactory(
        hub=hub,
        outpost=climate.outpost,
        flavor=allocation.flavor,
        project=climate,
        status=Server.Status.STOPPED,
    )
    # 9.5 h this month, and one more hour before the month began (not counted)
    Server.objects.filter(pk=used.pk).update(
        ready_at=month_start - timedelta(hours=1), stopped_at=month_start + timedelta(hours=9.5)
    )
    # then a start still fits while under the limit
    assert start(hub_client, 1, user="ann", flavor="large", project="climate").status_code == 202
    # when the month's use reaches the limit, counted from the month's first microsecond
    Server.objects.filter(pk=used.pk).update(
        stopped_at=month_start + timedelta(hours=10, microseconds=3)
    )
    # then the next start is refused, saying why
    assert refusal(start(hub_client, 2, user="ann", flavor="large", project="climate")) == (
        "s2 - Project climate has used its 10 flavor-hours of large for this month."
    )
