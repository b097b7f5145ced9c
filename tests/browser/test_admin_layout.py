"""In real Chromium (Playwright), on a 1440 px wide screen: the pages a site admin works in
fit it without scrolling sideways (the Outpost page with its flavors, policies and rules, and
the server list), and a server's Stop button works from a real browser session (CSRF).

The portal is the real web server (uvicorn, serving the admin's static files as the
all-in-one launcher does) on the test's own transactional database.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from guardian.shortcuts import assign_perm

from outposts.models import Server
from tests.factories import (
    USER_PASSWORD,
    FlavorFactory,
    HubFactory,
    HubPolicyFactory,
    OutpostFactory,
    ServerFactory,
    UserFactory,
    UserRuleFactory,
)
from tests.support.chromium import admin_login, chromium
from tests.support.portal import web_process

pytestmark = pytest.mark.e2e

SCREEN = {"width": 1440, "height": 900}

# What scrolls sideways: the page itself, and any element that hides an overflow behind a
# scroll bar of its own (the admin's result list does: it would fit the page, cut off).
SIDEWAYS = """() => {
  const wide = [];
  const page = document.documentElement;
  if (page.scrollWidth > window.innerWidth) wide.push(`page: ${page.scrollWidth}px`);
  for (const element of document.querySelectorAll("body *")) {
    const style = getComputedStyle(element);
    if (["auto", "scroll"].includes(style.overflowX)
        && element.scrollWidth > element.clientWidth + 1) {
      wide.push(`${element.tagName.toLowerCase()}.${element.className}: `
        + `${element.scrollWidth}px in ${element.clientWidth}px`);
    }
  }
  return wide;
}"""


@pytest.fixture
def portal_url(transactional_db: None, tmp_path: Path) -> Iterator[str]:
    with web_process(tmp_path, serve_static=True) as base:
        yield base


@pytest.fixture
def busy_outpost():
    """An Outpost as a site runs it: flavors with descriptions and resources, policies and
    rules, and servers with long user names, start ids and every column filled."""
    outpost = OutpostFactory(slug="cluster", name="The university cluster")
    hub = HubFactory(name="course-hub-of-the-physics-department", outposts=[outpost])
    flavors = [
        FlavorFactory(
            outpost=outpost,
            name=f"gpu-large-{n}",
            display_name=f"GPU large, 4 A100 and 256 GB memory ({n})",
            description="Four A100 GPUs, 64 cores and 256 GB of memory for a whole day.",
            weight=10 - n,
            max=100,
            max_per_user=2,
            runtime=timedelta(hours=24),
            resources={"req_nprocs": "64", "req_memory": "256G", "req_partition": "gpu"},
        )
        for n in range(3)
    ]
    for flavor in flavors:
        HubPolicyFactory(
            outpost=outpost, hub=hub, flavor=flavor, cap=50, overrides={"max_per_user": 1}
        )
    UserRuleFactory(
        outpost=outpost,
        name="students-of-the-introductory-course",
        attributes={"groups": ["students", "course-101"]},
        flavors=flavors[:1],
        overrides={flavors[0].name: {"runtime": {"hours": 1}}},
    )
    servers = [
        ServerFactory(
            outpost=outpost,
            hub=hub,
            flavor=flavors[n % 3],
            user_name=f"firstname.lastname-{n}@physics.university.example.org",
            name=f"analysis-notebook-{n}",
            start_id=f"0f8fad5b-d9cb-469f-a165-70867728950{n}",
            status=[Server.Status.RUNNING, Server.Status.STOPPED][n % 2],
        )
        for n in range(4)
    ]
    admin = UserFactory(username="site-admin", is_staff=True)
    assign_perm("outposts.change_outpost", admin, outpost)
    return outpost, servers


def open_as_site_admin(browser, portal_url: str, path: str):
    page = browser.new_page(viewport=SCREEN)
    page.set_default_timeout(30_000)
    admin_login(page, portal_url, username="site-admin", password=USER_PASSWORD, next_path=path)
    return page


def test_the_outpost_page_and_the_server_list_fit_a_1440_px_screen(
    portal_url, busy_outpost, tmp_path
):
    # given a busy Outpost and its site admin, on a 1440 px wide screen
    outpost, _ = busy_outpost
    with chromium() as browser:
        # when they open the Outpost's page and the server list
        outpost_page = open_as_site_admin(
            browser, portal_url, f"/admin/outposts/outpost/{outpost.pk}/change/"
        )
        outpost_page.screenshot(path=str(tmp_path / "outpost.png"), full_page=True)
        outpost_wide = outpost_page.evaluate(SIDEWAYS)
        flavor_rows = outpost_page.locator("#flavors-group tbody tr.has_original").count()
        servers_page = open_as_site_admin(browser, portal_url, "/admin/outposts/server/")
        servers_page.screenshot(path=str(tmp_path / "servers.png"), full_page=True)
        servers_wide = servers_page.evaluate(SIDEWAYS)
        server_rows = servers_page.locator("#result_list tbody tr").count()

    # then both show everything without scrolling sideways
    assert flavor_rows == 3
    assert outpost_wide == [], f"{outpost_wide}; see {tmp_path / 'outpost.png'}"
    assert server_rows == 4
    assert servers_wide == [], f"{servers_wide}; see {tmp_path / 'servers.png'}"


def test_stop_on_a_servers_page_works_from_a_real_browser(portal_url, busy_outpost, tmp_path):
    # given a running server of the busy Outpost
    _, servers = busy_outpost
    running = servers[0]
    assert running.status == Server.Status.RUNNING
    with chromium() as browser:
        # when its site admin opens the server's page and presses Stop
        page = open_as_site_admin(
            browser, portal_url, f"/admin/outposts/server/{running.pk}/change/"
        )
        title = page.inner_text("#content h1")
        page.screenshot(path=str(tmp_path / "server.png"))
        with page.expect_navigation():
            page.click("form.server-stop button")
        page.screenshot(path=str(tmp_path / "stopped.png"))
        message = page.inner_text("ul.messagelist")
        buttons_left = page.locator("form.server-stop").count()

    # then the page was titled by whose server it is, and the browser's post (its session and
    # CSRF token) asked the server to stop
    whose = f"{running.user_name}\u2019s server {running.name}"
    assert title == whose
    assert message == f"Asked {whose} to stop."
    assert buttons_left == 0
    running.refresh_from_db()
    assert running.status == Server.Status.STOPPING
