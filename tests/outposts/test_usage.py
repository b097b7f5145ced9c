"""Usage accounting: flavor-hours of a seeded history, computed by hand, and the same figures
on the admin usage page (table and chart) and in the CSV export, for whoever may see them."""

import csv
import io
import re
from datetime import UTC, datetime

import pytest
from django.urls import reverse
from django.utils import timezone
from guardian.shortcuts import assign_perm

from outposts.models import Outpost, Server
from outposts.usage import NO_PROJECT, usage_report
from projects.models import Project
from tests.factories import FlavorFactory, HubFactory, ProjectFactory, ServerFactory, UserFactory
from tests.support.html_tables import rows_with
from tests.support.svg_bars import svg_bars

pytestmark = pytest.mark.django_db

S = Server.Status
PAGE = "admin:outposts_outpost_usage"
CSV = "usage-csv"
NOVEMBER = {"from": "2026-11-01", "to": "2026-11-30"}
START, END = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)


def at(day, hour, minute=0, month=11):
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def ran(ready_at, stopped_at=None, **kwargs):
    """A server of ``flavor``'s Outpost that was ready from ``ready_at`` to ``stopped_at``
    (None: still running)."""
    status = S.RUNNING if stopped_at is None else S.STOPPED
    kwargs.setdefault("outpost", kwargs["flavor"].outpost if kwargs.get("flavor") else None)
    return ServerFactory(status=status, ready_at=ready_at, stopped_at=stopped_at, **kwargs)


@pytest.fixture
def history(two_outposts):
    """November's servers on two Outposts, from two Hubs; the hours each one counts are
    written next to it."""
    mine, theirs = two_outposts
    alpha, beta = HubFactory(name="alpha"), HubFactory(name="beta")
    small = FlavorFactory(outpost=mine, name="small")
    large = FlavorFactory(outpost=mine, name="large")
    their_small = FlavorFactory(outpost=theirs, name="small")
    climate = ProjectFactory(outpost=mine, name="climate")
    old = ProjectFactory(outpost=mine, name="old")
    # 4 h
    ran(at(2, 10), at(2, 14), hub=alpha, user_name="alice", flavor=small, project=climate)
    # 2.5 h
    ran(at(3, 0), at(3, 2, 30), hub=alpha, user_name="alice", flavor=large)
    # 3 h of 5: it became ready in October
    ran(at(31, 22, month=10), at(1, 3), hub=beta, user_name="bob", flavor=small, project=climate)
    # 4 h up to the end of the range: still running
    ran(at(30, 20), hub=beta, user_name="bob", flavor=large, project=old)
    # 1.5 h: the same user name on another Hub is another user
    ran(at(5, 12), at(5, 13, 30), hub=beta, user_name="alice", flavor=small)
    # 1 h on the other Outpost, of its own "small" flavor
    ran(at(10, 8), at(10, 9), hub=alpha, user_name="carol", flavor=their_small)
    # 0 h: never became ready
    failed = {"status": S.FAILED, "ready_at": None, "stopped_at": at(4, 1)}
    ServerFactory(outpost=mine, hub=alpha, user_name="alice", flavor=small, **failed)
    # 0 h: entirely in October
    ran(at(1, 1, month=10), at(2, 1, month=10), hub=alpha, user_name="dave", flavor=small)
    return {"mine": mine, "theirs": theirs, "large": large, "old": old}


def report(outposts, by, **kwargs):
    result = usage_report(
        servers=Server.objects.filter(outpost__in=outposts), start=START, end=END, by=by, **kwargs
    )
    return {row.labels: (row.servers, row.hours_text) for row in result.rows}


# Added up by hand from the seed.
BY_FLAVOR = {
    ("mine", "small"): (3, "8.50"),
    ("mine", "large"): (2, "6.50"),
    ("theirs", "small"): (1, "1.00"),
}


def test_flavor_hours_match_the_hand_computed_figures(history):
    # given November's history
    everything = Outpost.objects.all()
    # when usage is grouped every way
    # then each grouping adds up the hours counted by hand
    assert report(everything, ["flavor"]) == BY_FLAVOR
    assert report(everything, ["outpost"]) == {("mine",): (5, "15.00"), ("theirs",): (1, "1.00")}
    assert report(everything, ["hub"]) == {("alpha",): (3, "7.50"), ("beta",): (3, "8.50")}
    assert report(everything, ["user"]) == {
        ("alpha", "alice"): (2, "6.50"),
        ("beta", "bob"): (2, "7.00"),
        ("beta", "alice"): (1, "1.50"),
        ("alpha", "carol"): (1, "1.00"),
    }
    assert report(everything, ["project"]) == {
        ("mine", "climate"): (2, "7.00"),
        ("mine", "old"): (1, "4.00"),
        ("mine", NO_PROJECT): (2, "4.00"),
        ("theirs", NO_PROJECT): (1, "1.00"),
    }
    assert report(everything, ["user", "flavor"])[("mine", "beta", "bob", "large")] == (1, "4.00")


def test_a_running_server_counts_up_to_now(history):
    # given the server still running since 30 November 20:00
    # when usage is asked up to a later date, two hours after the end of November
    result = usage_report(
        servers=Server.objects.filter(outpost__slug="mine"),
        start=at(30, 0),
        end=datetime(2027, 1, 1, tzinfo=UTC),
        by=["flavor"],
        now=datetime(2026, 12, 1, 2, tzinfo=UTC),
    )
    # then it counts the six hours it has run so far
    assert [(row.labels, row.hours_text) for row in result.rows] == [(("mine", "large"), "6.00")]


def test_an_ended_server_without_a_stop_time_counts_up_to_its_last_change(two_outposts):
    # given a server recorded as stopped, without a stop time, last changed two hours after
    # it became ready
    mine, _ = two_outposts
    server = ServerFactory(outpost=mine, status=S.STOPPED, ready_at=at(6, 10), stopped_at=None)
    Server.objects.filter(pk=server.pk).update(updated_at=at(6, 12))
    # when November's usage is asked
    by_outpost = report(Outpost.objects.all(), ["outpost"])
    # then it counts those two hours, not up to now
    assert by_outpost == {("mine",): (1, "2.00")}


def test_usage_survives_a_flavor_rename_and_a_project_deletion(history):
    # given the large flavor renamed and the project "old" deleted after their servers ran
    history["large"].name = "xlarge"
    history["large"].save()
    history["old"].delete()
    mine = Outpost.objects.filter(slug="mine")
    # when usage is grouped by flavor and by project
    by_flavor = report(mine, ["flavor"])
    by_project = report(mine, ["project"])
    # then the flavor's hours show under its new name, the project's under "(no project)"
    assert by_flavor == {("mine", "small"): (3, "8.50"), ("mine", "xlarge"): (2, "6.50")}
    assert by_project == {("mine", "climate"): (2, "7.00"), ("mine", NO_PROJECT): (3, "8.00")}


def test_the_usage_is_read_in_one_query(history, django_assert_num_queries):
    # given November's history
    # when usage is grouped by every column
    # then one query reads it
    with django_assert_num_queries(1):
        usage_report(
            servers=Server.objects.all(),
            start=START,
            end=END,
            by=["user", "project", "hub", "flavor", "outpost"],
        )


def page(client, **query):
    response = client.get(reverse(PAGE), {**NOVEMBER, **query})
    assert response.status_code == 200
    return response.content.decode()


def table(html, columns):
    return {
        tuple(cells[column] for column in columns): (int(cells["servers"]), cells["hours"])
        for _, cells in rows_with(html, "data-row", table_id="usage-table")
        if "servers" in cells
    }


def chart(html):
    return {bar["data-label"]: bar["data-hours"] for bar in svg_bars(html)}


def exported(client, **query):
    response = client.get(reverse(CSV), {**NOVEMBER, **query})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    return rows


def test_the_page_table_chart_and_csv_show_the_same_figures(client, superuser, history):
    # given a superuser
    # when they open the usage page for November per flavor, and download its CSV
    html = page(client, by=["flavor"])
    rows = exported(client, by="flavor")
    # then the table, the chart's bars and the CSV all show the hand-computed figures
    assert table(html, ["outpost", "flavor"]) == BY_FLAVOR
    assert chart(html) == {
        f"{outpost} · {flavor}": hours for (outpost, flavor), (_, hours) in BY_FLAVOR.items()
    }
    assert {
        (row["outpost"], row["flavor"]): (int(row["servers"]), row["flavor_hours"]) for row in rows
    } == BY_FLAVOR
    # the largest bar is the full width, the others in proportion
    widths = {bar["data-label"]: float(bar["width"]) for bar in svg_bars(html)}
    assert widths == {"mine · small": 400.0, "mine · large": 305.9, "theirs · small": 47.1}
    # and the page links to the same figures as CSV
    assert reverse(CSV) in html


def test_the_csv_takes_groupings_comma_separated(client, superuser, history):
    # given a superuser
    # when they export usage by user and flavor
    rows = exported(client, by="user,flavor")
    # then each row names the Outpost, Hub, user and flavor, with its hours
    assert list(rows[0]) == ["outpost", "hub", "user", "flavor", "servers", "flavor_hours"]
    assert {tuple(row.values()) for row in rows} == {
        ("mine", "alpha", "alice", "small", "1", "4.00"),
        ("mine", "alpha", "alice", "large", "1", "2.50"),
        ("mine", "beta", "bob", "small", "1", "3.00"),
        ("mine", "beta", "bob", "large", "1", "4.00"),
        ("mine", "beta", "alice", "small", "1", "1.50"),
        ("theirs", "alpha", "carol", "small", "1", "1.00"),
    }


def test_anonymous_is_sent_to_log_in_and_refused_the_csv(client, history):
    # given an anonymous visitor
    # when they open the page and the CSV
    response = client.get(reverse(PAGE), NOVEMBER)
    export = client.get(reverse(CSV), {**NOVEMBER, "by": "flavor"})
    # then the page asks them to log in and the CSV is refused
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
    assert export.status_code == 403
    assert b"site admins" in export.content


def test_staff_without_outposts_is_refused_and_not_offered_the_link(client, history):
    # given a staff user who administers no Outpost
    client.force_login(UserFactory(is_staff=True))
    # when they open the admin index, the page and the CSV
    index = client.get(reverse("admin:index"))
    response = client.get(reverse(PAGE), NOVEMBER)
    export = client.get(reverse(CSV), {**NOVEMBER, "by": "flavor"})
    # then the index offers no link, the page and the CSV refuse them
    assert reverse(PAGE).encode() not in index.content
    assert response.status_code == 403
    assert export.status_code == 403


def test_a_site_admin_sees_only_their_outposts_usage(client, site_admin, history):
    # given a site admin of "mine" only
    # when they follow the index's link to the page, and export the CSV
    index = client.get(reverse("admin:index"))
    html = page(client, by=["outpost", "user"])
    rows = exported(client, by="outpost,user")
    # then both show only their Outpost's users
    mine_users = {
        ("mine", "alpha", "alice"): (2, "6.50"),
        ("mine", "beta", "bob"): (2, "7.00"),
        ("mine", "beta", "alice"): (1, "1.50"),
    }
    assert reverse(PAGE).encode() in index.content
    assert table(html, ["outpost", "hub", "user"]) == mine_users
    assert {
        (row["outpost"], row["hub"], row["user"]): (int(row["servers"]), row["flavor_hours"])
        for row in rows
    } == mine_users
    assert "carol" not in html
    assert "theirs" not in html


def test_a_project_manager_exports_only_their_projects_usage(client, history):
    # given the manager of project climate, who administers no Outpost
    pi = UserFactory(username="pi", is_staff=True)
    assign_perm("projects.manage_project", pi, Project.objects.get(name="climate"))
    client.force_login(pi)
    # when they export usage per project and user
    rows = exported(client, by="project,user")
    # then only climate's servers count, whichever Hub their users came from
    assert {
        (row["hub"], row["user"], row["project"]): (int(row["servers"]), row["flavor_hours"])
        for row in rows
    } == {("alpha", "alice", "climate"): (1, "4.00"), ("beta", "bob", "climate"): (1, "3.00")}
    # and the site admins' usage page stays closed to them
    assert client.get(reverse(PAGE), NOVEMBER).status_code == 403


def test_a_superuser_sees_every_outpost(client, superuser, history):
    # given a superuser
    # when they open the page per Outpost
    html = page(client, by=["outpost"])
    # then both Outposts have their row, and the total adds them up
    assert table(html, ["outpost"]) == {("mine",): (5, "15.00"), ("theirs",): (1, "1.00")}
    rows = rows_with(html, "data-row", table_id="usage-table")
    totals = [cells["hours"] for attributes, cells in rows if attributes["data-row"] == "total"]
    assert totals == ["16.00"]


def test_the_first_visit_shows_this_month_per_outpost_and_flavor(client, superuser, two_outposts):
    # given a superuser
    # when they open the page without a query
    response = client.get(reverse(PAGE))
    # then the form shows the current month so far, grouped by Outpost and flavor
    html = response.content.decode()
    today = timezone.localdate()
    assert response.status_code == 200
    assert f'name="from" value="{today.replace(day=1).isoformat()}"' in html
    assert f'name="to" value="{today.isoformat()}"' in html
    checked = set(re.findall(r'name="by" value="(\w+)"[^>]*checked', html))
    assert checked == {"outpost", "flavor"}
    assert "No usage in this range." in html


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"from": "2026-13-01", "to": "2026-11-30", "by": "flavor"}, "from: Enter a valid date."),
        ({"from": "2026-11-01", "by": "flavor"}, "to: This field is required."),
        ({**NOVEMBER, "by": "flavor,colour"}, "by: Unknown grouping 'colour': choose from"),
        ({**NOVEMBER, "by": ""}, "by: This field is required."),
        ({"from": "2026-11-30", "to": "2026-11-01", "by": "user"}, "'to' is before 'from'"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(client, site_admin, query, message):
    # given a site admin
    # when they ask the CSV with a bad date or grouping
    response = client.get(reverse(CSV), query)
    # then it answers 400 with a message naming what is wrong
    assert response.status_code == 400
    assert message in response.content.decode()


def test_the_page_shows_bad_input_on_the_form(client, site_admin):
    # given a site admin
    # when they ask the page for an unknown grouping
    response = client.get(reverse(PAGE), {**NOVEMBER, "by": "colour"})
    # then the form says so and no figures are shown
    html = response.content.decode()
    assert response.status_code == 200
    assert "Unknown grouping &#x27;colour&#x27;" in html
    assert 'id="usage-table"' not in html


def test_labels_are_escaped_in_the_table_and_the_chart(client, superuser, two_outposts):
    # given a Hub user name that is HTML
    mine, _ = two_outposts
    flavor = FlavorFactory(outpost=mine)
    ran(at(2, 10), at(2, 11), flavor=flavor, user_name="<img src=x onerror=alert(1)>")
    # when the page shows usage per user
    html = page(client, by=["user"])
    # then the name is shown as text, in the table and the chart
    assert "<img src=x" not in html
    assert html.count("&lt;img src=x onerror=alert(1)&gt;") >= 3
    assert [bar["data-hours"] for bar in svg_bars(html)] == ["1.00"]
