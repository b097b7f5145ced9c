"""Polls and lists cost the same few queries however many servers there are, and never call a
spawner: they answer from the portal's record (api-contract.md §3.2)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from jupyterhub.spawner import LocalProcessSpawner, Spawner
from rest_framework.test import APIClient

from flavors.models import HubPolicy, UserRule
from outposts.hubs import hub_api_key_create
from outposts.models import Server
from tests.factories import FlavorFactory, ServerFactory, SpawnEventFactory
from tests.support.api import ASYNC, send, start_body

pytestmark = pytest.mark.django_db

SERVICES = "/outposts/local/services"
# Authenticate the Hub, find its Outpost, read the server(s).
QUERIES = 3


def add_servers(hub, outpost, count: int) -> None:
    Server.objects.bulk_create(
        Server(
            hub=hub,
            outpost=outpost,
            name=f"s{n}",
            start_id=str(n),
            user_id=str(n),
            user_name=f"user{n}",
            status=Server.Status.RUNNING,
            env={"TOKEN": "x"},
        )
        for n in range(count)
    )


@pytest.mark.parametrize("count", [1, 500])
def test_list_costs_the_same_queries_for_1_and_500_servers(
    hub_client, hub, outpost, count, django_assert_num_queries
):
    add_servers(hub, outpost, count)
    with django_assert_num_queries(QUERIES):
        response = hub_client.get(SERVICES + "/")
    assert response.status_code == 200
    assert len(response.json()) == count


@pytest.mark.parametrize("count", [1, 500])
def test_poll_costs_the_same_queries_for_1_and_500_servers(
    hub_client, hub, outpost, count, django_assert_num_queries
):
    add_servers(hub, outpost, count)
    with django_assert_num_queries(QUERIES):
        response = hub_client.get(SERVICES + "/s0/0")
    assert response.json() == {"status": None, "logs": []}


WRITES = ("INSERT", "UPDATE", "DELETE")


def writes(queries: CaptureQueriesContext) -> list[str]:
    return [
        q["sql"] for q in queries.captured_queries if q["sql"].lstrip().upper().startswith(WRITES)
    ]


def test_a_poll_writes_nothing(hub_client, hub, outpost):
    # given a running server its Hub polls with HTTP Basic
    add_servers(hub, outpost, 1)
    # when the Hub polls it, twice
    with CaptureQueriesContext(connection) as queries:
        answers = [hub_client.get(SERVICES + "/s0/0") for _ in range(2)]
    # then both answer from the record and neither wrote a row
    assert [answer.json() for answer in answers] == [{"status": None, "logs": []}] * 2
    assert writes(queries) == []


def test_a_poll_with_an_api_key_writes_its_last_use_once_a_minute_at_most(hub, outpost):
    # given a running server and a Hub API key that was never used
    add_servers(hub, outpost, 1)
    _, key = hub_api_key_create(hub=hub, name="k1")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"token {key}")
    # when the Hub polls with it three times in a row
    with CaptureQueriesContext(connection) as queries:
        answers = [client.get(SERVICES + "/s0/0") for _ in range(3)]
    # then the only write is the key's first use
    assert [answer.status_code for answer in answers] == [200] * 3
    [update] = writes(queries)
    assert "last_used_at" in update


def test_no_endpoint_calls_a_spawner(hub_client, hub, outpost, monkeypatch):
    # given spawners that fail loudly if anything calls them in the web process
    def forbidden(*args, **kwargs):
        raise AssertionError("the API called a spawner")

    for cls in (Spawner, LocalProcessSpawner):
        for method in ("start", "poll", "stop"):
            monkeypatch.setattr(cls, method, forbidden)
    server = ServerFactory(hub=hub, outpost=outpost, name="lab", start_id="s1")
    SpawnEventFactory(server=server)
    # when a Hub uses every endpoint
    answers = [
        send(hub_client, "POST", SERVICES, start_body(name="new"), headers=ASYNC),
        hub_client.get(SERVICES + "/lab/s1"),
        hub_client.get(SERVICES + "/"),
        hub_client.get(SERVICES + "/lab/s1/events"),
        hub_client.get("/outposts/local/flavors/"),
        send(hub_client, "DELETE", SERVICES + "/lab/s1", headers=ASYNC),
    ]
    # then all of them answer from the database
    assert [answer.status_code for answer in answers] == [202, 200, 200, 200, 200, 202]


# Authenticate the Hub, find its Outpost, count its active servers per flavor.
FLAVOR_QUERIES = 3
# Once after a change, the Outpost's flavor terms (flavors/terms.py): its flavors, the Hub
# policies, the user rules with their Hubs and flavors.
TERMS_QUERIES = 5


@pytest.mark.parametrize("count", [1, 30])
def test_flavor_answers_cost_the_same_queries_however_many_flavors_and_rules(
    hub_client, hub, outpost, count, django_assert_num_queries
):
    # given flavors, each with a Hub policy and a user rule, and servers of each
    for n in range(count):
        flavor = FlavorFactory(outpost=outpost, name=f"f{n}")
        HubPolicy.objects.create(outpost=outpost, hub=hub, flavor=flavor, cap=5)
        rule = UserRule.objects.create(outpost=outpost, name=f"r{n}", attributes={"name": "x"})
        rule.hubs.set([hub])
        rule.flavors.set([flavor])
        ServerFactory(hub=hub, outpost=outpost, flavor=flavor, status=Server.Status.RUNNING)
    # when the Hub lists them twice, and asks for one user's
    with django_assert_num_queries(FLAVOR_QUERIES + TERMS_QUERIES):
        listed = hub_client.get("/outposts/local/flavors").json()
    with django_assert_num_queries(FLAVOR_QUERIES):
        listed_again = hub_client.get("/outposts/local/flavors").json()
    with django_assert_num_queries(FLAVOR_QUERIES):
        for_user = send(hub_client, "POST", "/outposts/local/userflavors?user_id=1", {"name": "x"})
    # then every flavor is there with its count, and the terms were read once
    assert len(listed) == count and all(item["current"] == 1 for item in listed.values())
    assert listed_again == listed
    assert len(for_user.json()) == 1  # the last rule wins the tie and lists one flavor


def start_statements(hub_client, outpost, name: str) -> list[str]:
    """The statements of one async start of a "capped" flavor (savepoints aside)."""
    body = start_body(name=name, start_id=name, user_options={"start_id": name, "flavor": "capped"})
    with CaptureQueriesContext(connection) as queries:
        response = send(hub_client, "POST", SERVICES, body, headers=ASYNC)
    assert response.status_code == 202, response.content
    return [q["sql"] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]]


def counts_of(statements: list[str]) -> list[str]:
    return [sql for sql in statements if sql.startswith("SELECT COUNT(")]


def test_admission_counts_every_limit_of_a_start_in_one_query(hub_client, hub, outpost):
    # given a flavor capped every way admission counts, and an Outpost limit per user
    capped = FlavorFactory(outpost=outpost, name="capped", max=10, max_per_user=5)
    HubPolicy.objects.create(outpost=outpost, hub=hub, flavor=capped, cap=8)
    outpost.max_servers_per_user = 6
    outpost.save()
    ServerFactory(hub=hub, outpost=outpost, flavor=capped, status=Server.Status.RUNNING)
    # when a start is admitted
    statements = start_statements(hub_client, outpost, "first")
    # then one query counted for all four limits
    [counted] = counts_of(statements)
    assert counted.count("COUNT(") == 4


def test_a_start_whose_flavor_caps_nothing_counts_nothing(hub_client, hub, outpost):
    FlavorFactory(outpost=outpost, name="capped", max=None, max_per_user=None)
    statements = start_statements(hub_client, outpost, "first")
    assert counts_of(statements) == []
    # and the Outpost row is locked once
    assert sum("FOR UPDATE" in sql for sql in statements) == 1
