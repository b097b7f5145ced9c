"""The project admin: a manager sees only their projects and grants flavors of the allocation;
the Outpost's administrators set the allocation and pick the managers (permission ladder)."""

import pytest
from django.urls import reverse
from guardian.shortcuts import assign_perm

from outposts.models import Outpost
from projects.models import Grant, Member
from projects.selectors import project_managers
from tests.factories import (
    AllocationFactory,
    FlavorFactory,
    HubFactory,
    MemberFactory,
    OutpostFactory,
    ProjectFactory,
    UserFactory,
)
from tests.support.admin_forms import change_form_data, inline_add

pytestmark = pytest.mark.django_db

GRANTS = "grants"
MEMBERS = "members"


def change_url(project) -> str:
    return reverse("admin:projects_project_change", args=[project.pk])


@pytest.fixture
def projects():
    """climate on Outpost hpc (large allocated, gpu not), and another project elsewhere."""
    hpc = OutpostFactory(slug="hpc")
    hub = HubFactory(name="hub1", outposts=[hpc])
    large = FlavorFactory(outpost=hpc, name="large")
    FlavorFactory(outpost=hpc, name="gpu")
    climate = ProjectFactory(outpost=hpc, name="climate")
    AllocationFactory(project=climate, flavor=large, max_servers=3)
    ann = MemberFactory(project=climate, hub=hub, user_name="ann")
    other = ProjectFactory(outpost=OutpostFactory(slug="elsewhere"), name="secret-project")
    return {"climate": climate, "other": other, "ann": ann, "large": large, "hub": hub}


@pytest.fixture
def manager(client, projects):
    user = UserFactory(username="pi", is_staff=True)
    assign_perm("projects.manage_project", user, projects["climate"])
    client.force_login(user)
    return user


def test_a_manager_sees_only_their_project_and_nothing_else(client, manager, projects):
    changelist = client.get(reverse("admin:projects_project_changelist"))
    assert changelist.status_code == 200
    assert "climate" in changelist.content.decode()
    assert "secret-project" not in changelist.content.decode()
    assert client.get(change_url(projects["other"])).status_code == 302  # not there: to index
    for hidden in ("admin:outposts_outpost_changelist", "admin:outposts_hub_changelist"):
        assert client.get(reverse(hidden)).status_code == 403
    index = client.get(reverse("admin:index")).content.decode()
    assert "Outposts" not in index and "Hubs" not in index


def test_staff_without_a_project_sees_no_projects(client, projects):
    client.force_login(UserFactory(username="nobody", is_staff=True))
    assert client.get(reverse("admin:projects_project_changelist")).status_code == 403
    assert client.get(change_url(projects["climate"])).status_code == 403


def test_a_manager_grants_a_member_a_flavor_of_the_allocation(client, manager, projects):
    # given the project's page as the manager sees it
    page = client.get(change_url(projects["climate"]))
    grant_form = page.context["inline_admin_formsets"][-1].formset.empty_form
    # then the grant form offers the allocation's flavors and the project's members only
    assert [f.name for f in grant_form.fields["flavor"].queryset] == ["large"]
    assert list(grant_form.fields["member"].queryset) == [projects["ann"]]
    # and the manager may not change the allocation or pick managers
    assert "managers" not in page.context["adminform"].form.fields
    # when they grant ann large
    data = change_form_data(page)
    inline_add(data, GRANTS, member=projects["ann"].pk, flavor=projects["large"].pk)
    response = client.post(change_url(projects["climate"]), data)
    # then the grant is saved, recording who granted it
    assert response.status_code == 302, response.context and response.context["errors"]
    grant = Grant.objects.get()
    assert (grant.member, grant.flavor, grant.granted_by) == (
        projects["ann"],
        projects["large"],
        manager,
    )


def test_a_grant_of_a_flavor_outside_the_allocation_is_refused(client, manager, projects):
    gpu = projects["climate"].outpost.flavors.get(name="gpu")
    data = change_form_data(client.get(change_url(projects["climate"])))
    inline_add(data, GRANTS, member=projects["ann"].pk, flavor=gpu.pk)
    response = client.post(change_url(projects["climate"]), data)
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert not Grant.objects.exists()


def test_a_manager_adds_a_member_of_a_hub_of_the_outpost_only(client, manager, projects):
    elsewhere = HubFactory(name="other-hub")
    data = change_form_data(client.get(change_url(projects["climate"])))
    inline_add(data, MEMBERS, hub=elsewhere.pk, user_name="zoe")
    assert client.post(change_url(projects["climate"]), data).status_code == 200
    data = change_form_data(client.get(change_url(projects["climate"])))
    inline_add(data, MEMBERS, hub=projects["hub"].pk, user_name="bob")
    assert client.post(change_url(projects["climate"]), data).status_code == 302
    assert sorted(Member.objects.values_list("user_name", flat=True)) == ["ann", "bob"]


def test_the_outposts_admin_picks_the_managers_on_the_project_page(client, projects):
    # given a site admin of the project's Outpost
    admin = UserFactory(username="siteadmin", is_staff=True)
    assign_perm("outposts.change_outpost", admin, Outpost.objects.get(slug="hpc"))
    client.force_login(admin)
    pi = UserFactory(username="pi", is_staff=True)
    # when they pick pi as the project's manager
    data = change_form_data(client.get(change_url(projects["climate"])))
    data["managers"] = [str(pi.pk)]
    response = client.post(change_url(projects["climate"]), data)
    # then pi manages the project, and sees it
    assert response.status_code == 302
    assert list(project_managers(project=projects["climate"])) == [pi]
    client.force_login(pi)
    assert client.get(change_url(projects["climate"])).status_code == 200
    # and the site admin cannot see the other Outpost's project
    client.force_login(admin)
    assert client.get(change_url(projects["other"])).status_code == 302


def test_a_manager_sees_the_audit_of_their_project_only(client, manager, projects):
    # given a grant in the manager's project, and a change in the other project
    data = change_form_data(client.get(change_url(projects["climate"])))
    inline_add(data, GRANTS, member=projects["ann"].pk, flavor=projects["large"].pk)
    assert client.post(change_url(projects["climate"]), data).status_code == 302
    projects["other"].description = "changed elsewhere"
    projects["other"].save()
    # when the manager opens the audit
    response = client.get(reverse("admin:auditlog_logentry_changelist"))
    # then they see their project's entries, their grant among them, and nothing else
    assert response.status_code == 200
    listed = sorted(entry.object_repr for entry in response.context["cl"].result_list)
    assert listed == sorted(
        ["climate", "climate: 3 of large", "ann of hub1", "ann of hub1 may use large"]
    )
