"""The capacity dashboard and the flavors' in-use counts, read from the pages a site admin
sees and checked against figures counted by hand from the seeded servers."""

import pytest
from django.urls import reverse

from outposts.capacity import (
    CapacityOverview,
    FlavorCapacity,
    HubShare,
    OutpostCapacity,
    capacity_overview,
)
from outposts.models import Outpost, Server
from tests.factories import (
    FlavorFactory,
    HubFactory,
    HubPolicyFactory,
    OutpostFactory,
    ServerFactory,
    UserFactory,
)
from tests.support.html_tables import rows_with

pytestmark = pytest.mark.django_db

S = Server.Status
DASHBOARD = "admin:outposts_outpost_capacity"


def servers(n, **kwargs):
    for _ in range(n):
        ServerFactory(**kwargs)


@pytest.fixture
def seeded(two_outposts):
    """Three Outposts (one draining, one disabled), two Hubs, flavors with and without a max,
    Hub policies with and without a cap, and servers in every status."""
    mine, theirs = two_outposts
    theirs.state = Outpost.State.DRAINING
    theirs.state_message = "Maintenance until Monday 08:00."
    theirs.save()
    off = OutpostFactory(
        slug="off",
        name="Old cluster",
        state=Outpost.State.DISABLED,
        state_message="<script>alert(1)</script> retired",
    )
    alpha, beta = HubFactory(name="alpha"), HubFactory(name="beta")
    small = FlavorFactory(outpost=mine, name="small", display_name="Small", max=10, weight=2)
    large = FlavorFactory(outpost=mine, name="large", display_name="Large", max=4, weight=1)
    FlavorFactory(outpost=mine, name="huge", display_name="Huge", max=None, weight=0)
    gpu = FlavorFactory(outpost=theirs, name="gpu", display_name="GPU", max=2)
    HubPolicyFactory(flavor=small, hub=alpha, cap=6)
    HubPolicyFactory(flavor=small, hub=beta, cap=None)
    HubPolicyFactory(flavor=large, hub=alpha, cap=3)
    HubPolicyFactory(flavor=large, hub=beta, allowed=False)
    on_small_alpha = {"outpost": mine, "flavor": small, "hub": alpha}
    for status, n in [
        (S.RUNNING, 2),
        (S.REQUESTED, 1),
        (S.PENDING, 1),
        (S.UNKNOWN, 1),
        (S.STOPPING, 1),
        (S.STOPPED, 2),
        (S.FAILED, 1),
    ]:
        servers(n, status=status, **on_small_alpha)
    for status in (S.RUNNING, S.PENDING, S.STOPPED):
        servers(1, status=status, outpost=mine, flavor=small, hub=beta)
    for status in (S.RUNNING, S.UNKNOWN, S.FAILED):
        servers(1, status=status, outpost=mine, flavor=large, hub=alpha)
    servers(1, status=S.STOPPED, outpost=mine, flavor=large, hub=beta)
    servers(1, status=S.RUNNING, outpost=theirs, flavor=gpu, hub=alpha)
    servers(1, status=S.RUNNING, outpost=theirs, flavor=None, hub=beta)
    return mine, theirs, off


# Counted by hand from the seed: active = every status but stopped and failed.
MINE_FLAVORS = {
    "small": {
        "flavor": "Small (small)",
        "active": "8",
        "max": "10",
        "free": "2",
        "queued": "3",
        "unknown": "1",
    },
    "large": {
        "flavor": "Large (large)",
        "active": "2",
        "max": "4",
        "free": "2",
        "queued": "0",
        "unknown": "1",
    },
    "huge": {
        "flavor": "Huge (huge)",
        "active": "0",
        "max": "unlimited",
        "free": "unlimited",
        "queued": "0",
        "unknown": "0",
    },
}
MINE_SHARES = {
    ("small", "alpha"): {"hub": "alpha", "active": "6", "cap": "6", "queued": "2", "unknown": "1"},
    ("small", "beta"): {"hub": "beta", "active": "2", "cap": "none", "queued": "1", "unknown": "0"},
    ("large", "alpha"): {"hub": "alpha", "active": "2", "cap": "3", "queued": "0", "unknown": "1"},
    ("large", "beta"): {
        "hub": "beta",
        "active": "0",
        "cap": "not allowed",
        "queued": "0",
        "unknown": "0",
    },
}
MINE_STATUSES = {
    "requested": "1",
    "pending": "2",
    "running": "4",
    "stopping": "1",
    "stopped": "4",
    "failed": "2",
    "unknown": "2",
}


def page_rows(html, kind):
    """The dashboard's rows of one kind, keyed by what identifies them."""
    return {
        tuple(
            attributes[key]
            for key in ("data-outpost", "data-flavor", "data-hub")
            if key in attributes
        ): cells
        for attributes, cells in rows_with(html, "data-row")
        if attributes["data-row"] == kind
    }


def test_the_dashboard_shows_the_hand_counted_figures(client, superuser, seeded):
    # given a seeded portal, seen by a superuser
    # when they open the dashboard
    response = client.get(reverse(DASHBOARD))
    html = response.content.decode()
    # then every figure is the one counted by hand, in the flavors' order (by weight)
    assert response.status_code == 200
    flavors = page_rows(html, "flavor")
    assert [key for key in flavors if key[0] == "mine"] == [
        ("mine", "small"),
        ("mine", "large"),
        ("mine", "huge"),
    ]
    assert {key[1]: cells for key, cells in flavors.items() if key[0] == "mine"} == MINE_FLAVORS
    assert flavors[("theirs", "gpu")] == {
        "flavor": "GPU (gpu)",
        "active": "1",
        "max": "2",
        "free": "1",
        "queued": "0",
        "unknown": "0",
    }
    # Servers without a flavor still hold resources: they get a row of their own.
    assert flavors[("theirs", "")]["flavor"] == "(no flavor)"
    assert flavors[("theirs", "")]["active"] == "1"
    shares = page_rows(html, "hub-share")
    assert {key[1:]: cells for key, cells in shares.items() if key[0] == "mine"} == MINE_SHARES
    idle = {"active": "1", "cap": "none", "queued": "0", "unknown": "0"}
    assert shares[("theirs", "gpu", "alpha")] == {"hub": "alpha", **idle}
    assert shares[("theirs", "", "beta")] == {"hub": "beta", **idle}
    statuses = page_rows(html, "status")
    assert statuses[("mine",)] == MINE_STATUSES
    assert statuses[("off",)] == {status: "0" for status in MINE_STATUSES}


def test_the_dashboard_lists_draining_and_disabled_outposts_with_their_message(
    client, superuser, seeded
):
    # given a draining and a disabled Outpost, one with markup in its message
    # when a superuser opens the dashboard
    html = client.get(reverse(DASHBOARD)).content.decode()
    # then both are listed with their state and message, and the markup is shown as text
    assert page_rows(html, "unavailable") == {
        ("off",): {
            "name": "Old cluster",
            "state": "Disabled",
            "message": "<script>alert(1)</script> retired",
        },
        ("theirs",): {
            "name": "Their cluster",
            "state": "Draining (running servers stay, no new starts)",
            "message": "Maintenance until Monday 08:00.",
        },
    }
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; retired" in html


def test_anonymous_is_sent_to_the_login_page(client, seeded):
    # given an anonymous visitor
    # when they open the dashboard
    response = client.get(reverse(DASHBOARD))
    # then they are asked to log in
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_staff_without_outposts_is_refused_and_not_offered_the_link(client, seeded):
    # given a staff user who administers no Outpost
    client.force_login(UserFactory(is_staff=True))
    # when they open the admin index and the dashboard
    index = client.get(reverse("admin:index"))
    response = client.get(reverse(DASHBOARD))
    # then the index does not offer it and the dashboard refuses them
    assert index.status_code == 200
    assert reverse(DASHBOARD).encode() not in index.content
    assert response.status_code == 403


def test_site_admin_sees_only_their_outposts_rows(client, site_admin, seeded):
    # given a site admin of "mine" only
    # when they open the admin index and follow its link to the dashboard
    index = client.get(reverse("admin:index"))
    assert reverse(DASHBOARD).encode() in index.content
    html = client.get(reverse(DASHBOARD)).content.decode()
    # then they see their Outpost's figures and nothing of the others
    rows = rows_with(html, "data-row")
    assert {attributes["data-outpost"] for attributes, _ in rows} == {"mine"}
    assert {key[1]: cells for key, cells in page_rows(html, "flavor").items()} == MINE_FLAVORS
    assert "Their cluster" not in html
    assert "Maintenance until Monday" not in html
    assert "gpu" not in html


def test_superuser_sees_every_outpost(client, superuser, seeded):
    # given a superuser
    # when they open the dashboard
    html = client.get(reverse(DASHBOARD)).content.decode()
    # then every Outpost has its status row
    assert set(page_rows(html, "status")) == {("mine",), ("off",), ("theirs",)}


def test_capacity_overview_counts_in_four_queries_whatever_the_servers(
    seeded, django_assert_num_queries
):
    # given the seeded portal, and then many more servers on it
    mine, _, _ = seeded
    small = mine.flavors.get(name="small")
    alpha = small.hub_policies.get(hub__name="alpha").hub

    def overview_of_mine() -> OutpostCapacity:
        with django_assert_num_queries(4):
            overview = capacity_overview(outposts=Outpost.objects.filter(pk=mine.pk))
        assert isinstance(overview, CapacityOverview)
        (entry,) = overview.outposts
        return entry

    # when the overview is read before and after
    before = overview_of_mine()
    servers(15, status=S.RUNNING, outpost=mine, flavor=small, hub=alpha)
    after = overview_of_mine()
    # then it counts them all, in the same number of queries
    assert before.flavors[0] == FlavorCapacity(
        name="small",
        display_name="Small",
        max=10,
        active=8,
        queued=3,
        unknown=1,
        hubs=(
            HubShare(hub="alpha", active=6, cap=6, queued=2, unknown=1),
            HubShare(hub="beta", active=2, cap=None, queued=1),
        ),
    )
    assert before.flavors[0].free == 2
    assert before.flavors[1].hubs[1] == HubShare(hub="beta", active=0, cap=None, allowed=False)
    assert dict((status, n) for status, _, n in before.by_status)["running"] == 4
    assert after.flavors[0].active == 23
    assert after.flavors[0].free == 0
    assert after.flavors[0].hubs[0].active == 21
    assert not before.is_unavailable


def flavor_list_in_use(client):
    html = client.get(reverse("admin:flavors_flavor_changelist")).content.decode()
    return {
        cells["field-name"]: cells["field-in_use"]
        for _, cells in rows_with(html, table_id="result_list")
        if "field-name" in cells
    }


def test_flavor_list_shows_in_use_counts(client, site_admin, seeded):
    # given the seeded portal, seen by the site admin of "mine"
    # when they open the flavor list
    in_use = flavor_list_in_use(client)
    # then each of their flavors shows its active servers, as the dashboard counts them
    assert in_use == {"small": "8", "large": "2", "huge": "0"}


@pytest.mark.parametrize("flavors", [1, 8])
def test_flavor_list_queries_do_not_grow_with_flavors(
    client, site_admin, two_outposts, flavors, django_assert_max_num_queries
):
    # given a site admin's Outpost with some flavors, each with servers of two Hubs
    mine, _ = two_outposts
    alpha, beta = HubFactory(name="alpha"), HubFactory(name="beta")
    for n in range(flavors):
        flavor = FlavorFactory(outpost=mine, name=f"f{n}", max=5)
        servers(2, status=S.RUNNING, outpost=mine, flavor=flavor, hub=alpha)
        servers(1, status=S.STOPPED, outpost=mine, flavor=flavor, hub=beta)
    # when they open the flavor list
    with django_assert_max_num_queries(FLAVOR_LIST_QUERIES):
        in_use = flavor_list_in_use(client)
    # then every flavor shows its count, in the same number of queries
    assert in_use == {f"f{n}": "2" for n in range(flavors)}


FLAVOR_LIST_QUERIES = 10
