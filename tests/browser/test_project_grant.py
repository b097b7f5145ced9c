"""End to end: a project manager grants a member a flavor in the portal's admin, driven in
real Chromium; that member's start through a real JupyterHub with the hubclient then runs,
and a non-member's is refused with the portal's message."""

from __future__ import annotations

import pytest
from guardian.shortcuts import assign_perm

from tests.support.chromium import admin_login
from tests.support.jupyterhub import running_jupyterhub
from tests.support.portal import LivePortal, local_outpost, running_portal
from tests.support.processes import free_port

# django_db only makes pytest-django create the test database (see
# tests/hubclient/test_e2e_hubclient.py); the portal's processes commit on their own.
pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

MANAGER_PASSWORD = "a-pi-password"


@pytest.fixture(scope="module")
def portal(tmp_path_factory, django_db_setup, django_db_blocker):
    directory = tmp_path_factory.mktemp("portal")
    outposts = [
        local_outpost(
            "local",
            directory / "home",
            flavors=[
                {"name": "small", "display_name": "Small", "weight": 10},
                {"name": "large", "display_name": "Large", "weight": 5},
            ],
        )
    ]
    with running_portal(
        directory,
        django_db_blocker=django_db_blocker,
        outposts=outposts,
        hub_api_port=free_port(),
    ) as live:
        from django.contrib.auth import get_user_model

        from outposts.models import Hub, Outpost
        from projects.models import Allocation, Member, Project

        with django_db_blocker.unblock():
            # project climate, allocated 2 of large; ann is a member; pi manages it
            outpost = Outpost.objects.get(slug="local")
            climate = Project.objects.create(outpost=outpost, name="climate")
            Allocation.objects.create(
                project=climate, flavor=outpost.flavors.get(name="large"), max_servers=2
            )
            Member.objects.create(
                project=climate, hub=Hub.objects.get(name=live.hub_name), user_name="ann"
            )
            pi = get_user_model().objects.create_user(
                "pi", password=MANAGER_PASSWORD, is_staff=True
            )
            assign_perm("projects.manage_project", pi, climate)
        yield live


def hubclient_config(portal: LivePortal) -> str:
    return f"""
c.JupyterHub.spawner_class = "outpost-portal"
c.OutpostPortalSpawner.hub_name = {portal.hub_name!r}
c.OutpostPortalSpawner.outposts = {{
    "local": {{"url": {portal.outpost_url("local")!r}, "secret_env": "OUTPOST_SECRET"}},
}}
c.OutpostPortalSpawner.default_outpost = "local"
c.OutpostPortalSpawner.events_poll_interval = 0.3
# Every user says they work in project climate; the portal decides who is a member.
c.OutpostPortalSpawner.user_projects = lambda spawner: ["climate"]
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0.01}}
"""


@pytest.fixture(scope="module")
def hub(portal, tmp_path_factory):
    with running_jupyterhub(
        tmp_path_factory.mktemp("hub"),
        spawner_config=hubclient_config(portal),
        env={"OUTPOST_SECRET": portal.hub_secret},
        hub_port=portal.hub_api_port,
    ) as running:
        yield running


def start(hub, user: str) -> list[dict]:
    assert hub.api("POST", f"/users/{user}")[0] in (201, 409)  # 409: the user exists
    options = {"outpost": "local", "flavor": "large", "project": "climate"}
    assert hub.api("POST", f"/users/{user}/server", options)[0] in (201, 202)
    return hub.progress(user)


def test_a_manager_grants_a_member_a_flavor_who_then_starts_it_through_the_hub(
    portal, hub, browser, tmp_path
):
    # given ann, a member of climate without a grant yet, is refused large in the project
    events = start(hub, "ann")
    assert events[-1]["failed"] is True, events
    assert "Allowed values for user: []" in events[-1]["message"]
    hub.wait_gone("ann")

    # when pi, the project's manager, grants her large on the project's page
    page = browser.new_page()
    page.set_default_timeout(60_000)
    projects = "/admin/projects/project/"
    admin_login(page, portal.url, username="pi", password=MANAGER_PASSWORD, next_path=projects)
    page.screenshot(path=str(tmp_path / "0-projects.png"), full_page=True)
    page.click("#result_list a:text-is('climate')")  # the manager lands on its page
    page.select_option("#grant-form select[name='grant-member']", label=f"ann of {portal.hub_name}")
    page.select_option("#grant-form select[name='grant-flavor']", label="Large (large)")
    page.screenshot(path=str(tmp_path / "1-grant.png"), full_page=True)
    page.click("#grant-form input[type=submit]")
    page.wait_for_selector(".messagelist .success")
    page.screenshot(path=str(tmp_path / "2-granted.png"), full_page=True)
    assert "pi" in page.inner_text("tr[data-grant='ann:large'] .grant-granted-by")
    # and the audit records who granted what
    from auditlog.models import LogEntry

    (entry,) = LogEntry.objects.filter(content_type__model="grant")
    assert (entry.actor.username, entry.action) == ("pi", LogEntry.Action.CREATE)
    assert "ann of" in entry.object_repr and "large" in entry.object_repr

    # then ann's start of large in the project runs
    events = start(hub, "ann")
    assert events[-1].get("ready") is True, events
    assert portal.server("ann")["flavor"] == "large"

    # and eve, who is not a member, is refused with a message that says so
    events = start(hub, "eve")
    assert events[-1]["failed"] is True, events
    assert f"eve of {portal.hub_name} is not a member of project climate." in events[-1]["message"]

    status, _ = hub.api("DELETE", "/users/ann/server")
    assert status in (202, 204)
    hub.wait_gone("ann")
