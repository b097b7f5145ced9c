"""In real Chromium (Playwright): a site admin opens "Who can use what" from their Outpost's
page and previews two users of one Hub: a student, whom a user rule restricts and overrides,
and a staff member, whom no rule matches and who gets the Hub's policy.

The portal is the real web server (uvicorn, serving the admin's static files as the
all-in-one launcher does) on the test's own transactional database.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from guardian.shortcuts import assign_perm

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


@pytest.fixture
def portal_url(transactional_db: None, tmp_path: Path) -> Iterator[str]:
    with web_process(tmp_path, serve_static=True) as base:
        yield base


def flavor_rows(page) -> dict[str, dict[str, str]]:
    """The preview's table as the admin reads it: per flavor name, each column's text."""
    rows = {}
    for row in page.locator("#preview-flavors tbody tr").all():
        cells = {
            cell.get_attribute("class"): " ".join(cell.inner_text().split())
            for cell in row.locator("td").all()
        }
        rows[cells["flavor-name"]] = cells
    return rows


def show(page, *, hub: str, attributes: str, user_id: str = "") -> None:
    page.select_option("#id_hub", label=hub)
    page.fill("#id_authentication", attributes)
    page.fill("#id_user_id", user_id)
    with page.expect_navigation():
        page.click("input[name=_preview]")
    page.wait_for_selector("#preview-result")


def test_the_preview_shows_two_users_what_they_get_and_why(portal_url, tmp_path):
    # given an Outpost whose Hub may use small and large (large capped at 2 for it, one per
    # user) but not gpu, a rule giving students small only, for an hour, and a server of
    # Hub user 7 on large; and a site admin of that Outpost
    outpost = OutpostFactory(slug="cluster", name="The cluster")
    small = FlavorFactory(outpost=outpost, name="small", display_name="Small", weight=1)
    large = FlavorFactory(outpost=outpost, name="large", display_name="Large", weight=5, max=10)
    FlavorFactory(outpost=outpost, name="gpu", display_name="GPU", weight=9)
    hub = HubFactory(name="course-hub", outposts=[outpost])
    HubPolicyFactory(outpost=outpost, hub=hub, flavor=small)
    HubPolicyFactory(outpost=outpost, hub=hub, flavor=large, cap=2, overrides={"max_per_user": 1})
    UserRuleFactory(
        outpost=outpost,
        name="students",
        attributes={"groups": ["students"]},
        flavors=[small],
        overrides={"small": {"runtime": {"hours": 1}}},
    )
    ServerFactory(outpost=outpost, hub=hub, flavor=large, user_id="7")
    admin = UserFactory(username="site-admin", is_staff=True)
    assign_perm("outposts.change_outpost", admin, outpost)

    with chromium() as browser:
        page = browser.new_page()
        page.set_default_timeout(30_000)
        # when the site admin opens the preview from their Outpost's page
        change = f"/admin/outposts/outpost/{outpost.pk}/change/"
        admin_login(
            page, portal_url, username="site-admin", password=USER_PASSWORD, next_path=change
        )
        page.screenshot(path=str(tmp_path / "0-outpost.png"), full_page=True)
        with page.expect_navigation():
            page.click("text=Who can use what")
        assert page.url == f"{portal_url}/admin/outposts/outpost/{outpost.pk}/preview/"

        # and previews a student
        show(page, hub="course-hub", attributes='{"name": "alice", "groups": ["students"]}')
        page.screenshot(path=str(tmp_path / "1-student.png"), full_page=True)
        student = flavor_rows(page)
        student_rule = page.inner_text("#preview-rule")
        student_left_out = page.inner_text("#preview-left-out")

        # and a staff member, Hub user 7
        show(page, hub="course-hub", attributes='{"name": "bob", "groups": ["staff"]}', user_id="7")
        page.screenshot(path=str(tmp_path / "2-staff.png"), full_page=True)
        staff = flavor_rows(page)
        staff_rule = page.inner_text("#preview-rule")
        staff_left_out = page.inner_text("#preview-left-out")

    # then the student gets small only, for an hour, as the Hub's policy and the rule decided
    assert list(student) == ["small"], student
    assert student["small"]["flavor-runtime"] == "1 h"
    assert student["small"]["flavor-decided-by"] == "policy of Hub course-hub, rule students"
    assert "Decided by user rule students." in student_rule
    assert "large: rule students does not list it" in student_left_out
    assert "gpu: Hub course-hub: no policy allows it" in student_left_out
    # and the staff member gets both flavors the Hub may use, with the Hub's cap and counts
    assert list(staff) == ["large", "small"], staff
    large_row = staff["large"]
    assert large_row["flavor-max"] == "10"
    assert large_row["flavor-hub-cap"] == "2"
    assert large_row["flavor-hub-max"] == "2 / 1"
    assert large_row["flavor-max-per-user"] == "1"
    assert large_row["flavor-user-active"] == "1"
    assert large_row["flavor-runtime"] == "2 h"
    assert large_row["flavor-decided-by"] == "policy of Hub course-hub"
    assert staff["small"]["flavor-runtime"] == "2 h"
    assert "No user rule matches" in staff_rule
    assert "gpu: Hub course-hub: no policy allows it" in staff_left_out
    assert "large" not in staff_left_out
