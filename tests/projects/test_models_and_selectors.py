"""Projects' own rules: what an allocation and a grant may name, who manages a project, and
what a member may use of it."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone
from guardian.shortcuts import assign_perm

from projects.models import Allocation
from projects.selectors import project_managers, project_terms, projects_managed_by
from projects.services import project_managers_set
from tests.factories import (
    AllocationFactory,
    FlavorFactory,
    GrantFactory,
    HubFactory,
    MemberFactory,
    OutpostFactory,
    ProjectFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


def test_an_allocation_names_a_flavor_of_the_projects_outpost():
    project = ProjectFactory()
    foreign = FlavorFactory(outpost=OutpostFactory(slug="elsewhere"))
    with pytest.raises(ValidationError, match="Choose a flavor of the project's Outpost."):
        Allocation(project=project, flavor=foreign, max_servers=1).full_clean()
    Allocation(
        project=project, flavor=FlavorFactory(outpost=project.outpost), max_servers=1
    ).full_clean()


def test_a_grant_names_a_member_of_its_own_project():
    allocation = AllocationFactory()
    stranger = MemberFactory(project=ProjectFactory(outpost=allocation.project.outpost))
    grant = GrantFactory.build(
        member=stranger, project=allocation.project, flavor=allocation.flavor
    )
    with pytest.raises(ValidationError, match=f"Choose a member of project {allocation.project}"):
        grant.full_clean()


def test_managers_are_set_to_exactly_the_users_given():
    project = ProjectFactory()
    ann, bob = (
        UserFactory(username="ann", is_staff=True),
        UserFactory(username="bob", is_staff=True),
    )
    project_managers_set(project=project, users=[ann, bob])
    assert sorted(u.username for u in project_managers(project=project)) == ["ann", "bob"]
    project_managers_set(project=project, users=[bob])
    assert [u.username for u in project_managers(project=project)] == ["bob"]
    project_managers_set(project=project, users=[])
    assert list(project_managers(project=project)) == []


def test_who_manages_which_projects():
    mine, theirs = ProjectFactory(name="mine"), ProjectFactory(name="theirs")
    manager = UserFactory(username="pi", is_staff=True)
    assign_perm("projects.manage_project", manager, mine)
    site_admin = UserFactory(username="ops", is_staff=True)
    assign_perm("outposts.change_outpost", site_admin, theirs.outpost)
    not_staff = UserFactory(username="user")
    assign_perm("projects.manage_project", not_staff, mine)
    gone = UserFactory(username="gone", is_staff=True, is_active=False)
    assign_perm("projects.manage_project", gone, mine)
    root = UserFactory(username="root", is_staff=True, is_superuser=True)

    def managed(user):
        return sorted(p.name for p in projects_managed_by(user=user))

    assert managed(manager) == ["mine"]
    assert managed(site_admin) == ["theirs"]  # every project of the Outposts they administer
    assert managed(not_staff) == [] and managed(gone) == []
    assert managed(root) == ["mine", "theirs"]
    assert list(project_managers(project=theirs)) == []  # Outpost admins are not its managers


def test_a_members_terms_hold_only_their_own_live_grants():
    allocation = AllocationFactory(max_servers=3, hours_per_month=40)
    project, flavor = allocation.project, allocation.flavor
    hub = HubFactory(outposts=[project.outpost])
    ann = MemberFactory(project=project, hub=hub, user_name="ann")
    bob = MemberFactory(project=project, hub=hub, user_name="bob")
    GrantFactory(member=bob, flavor=flavor)
    expired = GrantFactory(member=ann, flavor=flavor)
    expired.expires_at = timezone.now() - timedelta(seconds=1)
    expired.save()

    ann_terms = project_terms(hub=hub, outpost=project.outpost, name=project.name, user_name="ann")
    bob_terms = project_terms(hub=hub, outpost=project.outpost, name=project.name, user_name="bob")
    other_hub = project_terms(
        hub=HubFactory(name="other"), outpost=project.outpost, name=project.name, user_name="bob"
    )
    assert (ann_terms.member, ann_terms.granted_ids) == (True, frozenset())
    assert (bob_terms.granted_ids, bob_terms.allocated, bob_terms.hours_per_month) == (
        frozenset({flavor.pk}),
        {flavor.pk: 3},
        {flavor.pk: 40},
    )
    assert (other_hub.id, other_hub.member) == (project.pk, False)
    assert (
        project_terms(
            hub=hub, outpost=OutpostFactory(slug="none"), name=project.name, user_name="bob"
        )
        is None
    )  # an Outpost without projects
