"""The project admin (permission ladder): a manager sees only their projects, and on a
project's page adds and removes members and grants and revokes flavors of the allocation; the
Outpost's administrators set the project, its allocation and its managers."""

from datetime import timedelta

import pytest
from auditlog.models import LogEntry
from django.urls import reverse
from django.utils import timezone
from guardian.shortcuts import assign_perm

from outposts.models import Outpost, Server
from projects.models import Allocation, Grant, Member
from projects.selectors import project_managers
from tests.factories import (
    AllocationFactory,
    FlavorFactory,
    GrantFactory,
    HubFactory,
    MemberFactory,
    OutpostFactory,
    ProjectFactory,
    ServerFactory,
    UserFactory,
)
from tests.support.admin_forms import change_form_data, inline_add
from tests.support.html_tables import rows_with

pytestmark = pytest.mark.django_db


def change_url(project) -> str:
    return reverse("admin:projects_project_change", args=[project.pk])


def page_url(project) -> str:
    return reverse("admin:projects_project_members", args=[project.pk])


@pytest.fixture
def projects():
    """climate on Outpost hpc (large allocated, gpu not), and another project elsewhere."""
    hpc = OutpostFactory(slug="hpc")
    hub = HubFactory(name="hub1", outposts=[hpc])
    large = FlavorFactory(outpost=hpc, name="large", display_name="Large")
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


def post(client, project, action, **fields):
    return client.post(page_url(project), {"action": action, **fields})


def grant(client, project, member, flavor, expires=""):
    data = {"grant-member": member.pk, "grant-flavor": flavor.pk, "grant-expires_at": expires}
    return post(client, project, "grant", **data)


def cells(response, attribute):
    return {attrs[attribute]: row for attrs, row in rows_with(response.content.decode(), attribute)}


# --- who sees what ---------------------------------------------------------------------


def test_a_manager_sees_only_their_project_and_nothing_else(client, manager, projects):
    changelist = client.get(reverse("admin:projects_project_changelist"))
    assert changelist.status_code == 200
    assert "climate" in changelist.content.decode()
    assert page_url(projects["climate"]) in changelist.content.decode()
    assert "secret-project" not in changelist.content.decode()
    assert client.get(change_url(projects["other"])).status_code == 302  # not there: to index
    assert client.get(page_url(projects["other"])).status_code == 404
    assert post(client, projects["other"], "revoke", id=1).status_code == 404
    for hidden in ("admin:outposts_outpost_changelist", "admin:outposts_hub_changelist"):
        assert client.get(reverse(hidden)).status_code == 403
    index = client.get(reverse("admin:index")).content.decode()
    assert "Outposts" not in index and "Hubs" not in index


def test_staff_without_a_project_sees_no_projects(client, projects):
    client.force_login(UserFactory(username="nobody", is_staff=True))
    assert client.get(reverse("admin:projects_project_changelist")).status_code == 403
    assert client.get(change_url(projects["climate"])).status_code == 403
    assert client.get(page_url(projects["climate"])).status_code == 404


def test_a_manager_is_taken_to_the_projects_page_and_cannot_change_the_project(
    client, manager, projects
):
    climate = projects["climate"]
    # when the manager opens the project's change form, or posts to it
    opened = client.get(change_url(climate))
    posted = client.post(change_url(climate), {"name": "renamed", "outpost": climate.outpost_id})
    # then they land on the project's page, and the project is as it was
    assert opened.status_code == posted.status_code == 302
    assert opened["Location"] == page_url(climate)
    climate.refresh_from_db()
    assert climate.name == "climate"
    page = client.get(page_url(climate))
    assert page.status_code == 200
    assert "Edit project, allocation and managers" not in page.content.decode()


# --- the project's page ----------------------------------------------------------------


def test_the_page_shows_the_allocation_in_use_and_this_months_hours(client, manager, projects):
    # given 10 flavor-hours per month allocated, and two of the project's servers of large
    # running: one for two hours, one started before this month
    climate, large = projects["climate"], projects["large"]
    Allocation.objects.filter(project=climate).update(hours_per_month=10)
    now = timezone.now()
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    readies = (now - timedelta(hours=2), month_start - timedelta(days=3))
    for ready_at in readies:
        ServerFactory(outpost=climate.outpost, flavor=large, project=climate, ready_at=ready_at)
    ServerFactory(outpost=climate.outpost, flavor=large, status=Server.Status.STOPPED)
    # when the manager opens the project's page
    row = cells(client.get(page_url(climate)), "data-flavor")["large"]
    # then the allocation shows 2 of 3 active, and the hours since the month began
    month_hours = sum((now - max(ready, month_start)).total_seconds() for ready in readies) / 3600
    assert (row["allocation-max"], row["allocation-active"]) == ("3", "2")
    assert abs(float(row["allocation-hours"]) - month_hours) <= 0.1
    assert row["allocation-hours-limit"] == "10"


def test_a_manager_grants_a_member_a_flavor_of_the_allocation(client, manager, projects):
    climate, ann, large = projects["climate"], projects["ann"], projects["large"]
    # given the project's page as the manager sees it
    page = client.get(page_url(climate))
    form = page.context["grant_form"]
    # then the grant form offers the allocation's flavors and the project's members only
    assert [str(choice) for _, choice in form.fields["flavor"].choices][1:] == ["Large (large)"]
    assert list(form.fields["member"].queryset) == [ann]
    # when they grant ann large
    response = grant(client, climate, ann, large)
    # then the grant is saved, recording who granted it, and the page lists it
    assert response.status_code == 302, response.context and response.context["grant_form"].errors
    saved = Grant.objects.get()
    assert (saved.member, saved.flavor, saved.granted_by, saved.expires_at) == (
        ann,
        large,
        manager,
        None,
    )
    page = client.get(page_url(climate))
    row = cells(page, "data-grant")["ann:large"]
    assert (row["grant-granted-by"], row["grant-expires"]) == ("pi", "until revoked")
    assert "Granted: ann of hub1 may use large." in page.content.decode()


def test_a_grant_of_a_flavor_outside_the_allocation_is_refused(client, manager, projects):
    gpu = projects["climate"].outpost.flavors.get(name="gpu")
    response = grant(client, projects["climate"], projects["ann"], gpu)
    assert response.status_code == 200
    assert "Project climate has no allocation of that flavor" in response.content.decode()
    assert not Grant.objects.exists()


def test_a_grant_to_another_projects_member_is_refused(client, manager, projects):
    stranger = MemberFactory(project=projects["other"], user_name="zed")
    response = grant(client, projects["climate"], stranger, projects["large"])
    assert response.status_code == 200
    assert "Choose a member of project climate." in response.content.decode()
    assert not Grant.objects.exists()


def test_granting_again_sets_a_new_expiry_and_a_past_one_is_refused(client, manager, projects):
    climate, ann, large = projects["climate"], projects["ann"], projects["large"]
    assert grant(client, climate, ann, large, expires="2099-01-31T12:00").status_code == 302
    # when the manager grants it again, later
    assert grant(client, climate, ann, large, expires="2099-06-30T12:00").status_code == 302
    # then there is still one grant, with the new expiry
    (renewed,) = Grant.objects.all()
    assert renewed.expires_at.isoformat() == "2099-06-30T12:00:00+00:00"
    # and an expiry in the past is refused, leaving it as it was
    response = grant(client, climate, ann, large, expires="2020-01-01T00:00")
    assert response.status_code == 200
    assert "Choose an expiry in the future, or none." in response.content.decode()
    renewed.refresh_from_db()
    assert renewed.expires_at.year == 2099


def test_an_expired_grant_shows_as_expired(client, manager, projects):
    GrantFactory(
        member=projects["ann"],
        flavor=projects["large"],
        expires_at=timezone.now() - timedelta(days=1),
    )
    row = cells(client.get(page_url(projects["climate"])), "data-grant")["ann:large"]
    assert row["grant-expires"].endswith("(expired)")


def test_a_manager_revokes_a_grant_of_their_project_only(client, manager, projects):
    mine = GrantFactory(member=projects["ann"], flavor=projects["large"])
    # when the manager revokes it
    response = post(client, projects["climate"], "revoke", id=mine.pk)
    # then it is gone
    assert response.status_code == 302
    assert not Grant.objects.filter(pk=mine.pk).exists()
    # and a grant of another project cannot be revoked from this page
    theirs = GrantFactory(member=MemberFactory(project=projects["other"]))
    assert post(client, projects["climate"], "revoke", id=theirs.pk).status_code == 404
    assert Grant.objects.filter(pk=theirs.pk).exists()


def test_a_manager_adds_members_of_the_outposts_hubs_only(client, manager, projects):
    climate = projects["climate"]
    elsewhere = HubFactory(name="other-hub")

    def add(hub, user_name):
        return post(
            client, climate, "add-member", **{"member-hub": hub.pk, "member-user_name": user_name}
        )

    # a Hub that may not use the Outpost is not offered, and refused
    page = client.get(page_url(climate))
    assert list(page.context["member_form"].fields["hub"].queryset) == [projects["hub"]]
    assert add(elsewhere, "zoe").status_code == 200
    # a member of one of its Hubs is added, once
    assert add(projects["hub"], "bob").status_code == 302
    twice = add(projects["hub"], "bob")
    assert twice.status_code == 200
    assert "bob of hub1 is already a member of climate." in twice.content.decode()
    assert sorted(Member.objects.values_list("user_name", flat=True)) == ["ann", "bob"]


def test_removing_a_member_removes_their_grants(client, manager, projects):
    GrantFactory(member=projects["ann"], flavor=projects["large"])
    stranger = MemberFactory(project=projects["other"])
    assert post(client, projects["climate"], "remove-member", id=stranger.pk).status_code == 404
    response = post(client, projects["climate"], "remove-member", id=projects["ann"].pk)
    assert response.status_code == 302
    assert list(Member.objects.all()) == [stranger]
    assert not Grant.objects.exists()


def test_an_unknown_action_is_refused(client, manager, projects):
    assert post(client, projects["climate"], "delete-everything").status_code == 400


def test_names_are_escaped_on_the_page(client, manager, projects):
    MemberFactory(project=projects["climate"], hub=projects["hub"], user_name="<b>x</b>")
    html = client.get(page_url(projects["climate"])).content.decode()
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html


# --- the Outpost's administrators ------------------------------------------------------


@pytest.fixture
def site_admin(client, projects):
    admin = UserFactory(username="siteadmin", is_staff=True)
    assign_perm("outposts.change_outpost", admin, Outpost.objects.get(slug="hpc"))
    client.force_login(admin)
    return admin


def test_the_outposts_admin_picks_the_managers_on_the_project_page(client, site_admin, projects):
    pi = UserFactory(username="pi", is_staff=True)
    # when they pick pi as the project's manager
    data = change_form_data(client.get(change_url(projects["climate"])))
    data["managers"] = [str(pi.pk)]
    response = client.post(change_url(projects["climate"]), data)
    # then pi manages the project, and sees its page
    assert response.status_code == 302
    assert list(project_managers(project=projects["climate"])) == [pi]
    client.force_login(pi)
    assert client.get(page_url(projects["climate"])).status_code == 200
    # and the site admin cannot see the other Outpost's project
    client.force_login(site_admin)
    assert client.get(change_url(projects["other"])).status_code == 302
    assert client.get(page_url(projects["other"])).status_code == 404


def test_the_outposts_admin_sets_the_allocation_with_its_hours(client, site_admin, projects):
    gpu = projects["climate"].outpost.flavors.get(name="gpu")
    page = client.get(change_url(projects["climate"]))
    assert page_url(projects["climate"]) in page.content.decode()  # the members page link
    data = change_form_data(page)
    inline_add(data, "allocations", flavor=gpu.pk, max_servers=1, hours_per_month=20)
    assert client.post(change_url(projects["climate"]), data).status_code == 302
    allocation = Allocation.objects.get(flavor=gpu)
    assert (allocation.max_servers, allocation.hours_per_month) == (1, 20)


# --- audit -----------------------------------------------------------------------------


def test_a_manager_sees_the_audit_of_their_project_only(client, manager, projects):
    # given a grant in the manager's project, and a change in the other project
    assert grant(client, projects["climate"], projects["ann"], projects["large"]).status_code == 302
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
    (entry,) = LogEntry.objects.filter(content_type__model="grant")
    assert (entry.actor.username, entry.action) == ("pi", LogEntry.Action.CREATE)
