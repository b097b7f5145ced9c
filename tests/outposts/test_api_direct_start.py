"""outposts/api/direct/start.py: a common start is admitted and answered without Django's
request handling, with exactly the answers and rows the Django API handler gives; every other
start goes on to that handler.

As in test_api_direct.py, each start goes through the real ASGI applications twice: through
the direct app (whose fallback, a spy around the Django API handler, tells which path
answered) and through the Django API handler alone, each for a server of its own where the
start would make one.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.utils.timezone import now

from monitoring.models import MetricCount
from monitoring.services import STARTS_REFUSED
from outposts.api import serializers
from outposts.api.direct import base as direct_base
from outposts.api.direct import direct_api
from outposts.api.direct import start as direct_start
from outposts.hubs import hub_api_key_create
from outposts.models import Hub, Server, WorkerHeartbeat
from outposts.services import START_NOT_QUEUED
from outposts.workers import worker_heartbeat_record
from portal.asgi import api_application
from tests.factories import HUB_SECRET, FlavorFactory, HubFactory, OutpostFactory
from tests.outposts import test_api_direct as direct_tests
from tests.outposts.test_api_direct import JSON, Spy, basic, post, same
from tests.support.redis_server import celery_app_broker

pytestmark = pytest.mark.django_db(transaction=True)

# As for the direct reads: each test compiles the queries afresh, and no direct answer fails.
compiled_afresh = direct_tests.compiled_afresh
no_direct_failure = direct_tests.no_direct_failure

ASYNC = {"execution-type": "async"}
SERVICES = "/outposts/local/services"


@pytest.fixture
def fallback() -> Spy:
    return Spy()


@pytest.fixture
def direct(fallback):
    return direct_api(api=fallback, middleware=settings.API_MIDDLEWARE)


@pytest.fixture
def outposts(transactional_db) -> dict[str, Any]:
    """The default Outpost with a flavor of room for two servers, granted to hub1; another
    Outpost nobody was granted."""
    local = OutpostFactory(slug="local", is_default=True)
    OutpostFactory(slug="ungranted")
    hub = HubFactory(name="hub1", outposts=[local])
    return {"local": local, "hub": hub, "small": FlavorFactory(outpost=local, name="small", max=2)}


def start_json(name: str, *, user_id: str = "1", **changes: Any) -> bytes:
    """A stock Hub's start of user ``user_id``'s server ``name`` (its start_id too)."""
    body: dict[str, Any] = {
        "name": name,
        "env": {
            "JUPYTERHUB_USER": f"user{user_id}",
            "JUPYTERHUB_USER_ID": user_id,
            "JUPYTERHUB_API_TOKEN": "secret-token",
        },
        "user_options": {"start_id": name, "flavor": "small"},
        "misc": {},
        "certs": {},
        "authentication": {"name": f"user{user_id}"},
        **changes,
    }
    return json.dumps(body).encode()


def row(name: str) -> dict[str, Any]:
    """What a start wrote of server ``name``, the fields that differ by name aside."""
    server = Server.objects.get(name=name)
    return {
        "hub": server.hub_id,
        "outpost": server.outpost_id,
        "flavor": server.flavor_id,
        "flavor_settings": server.flavor_settings,
        "status": server.status,
        "user": (server.user_id, server.user_name),
        "env": server.env,
        "user_options": {**server.user_options, "start_id": None},
        "address_via_callback": server.address_via_callback,
        "events": list(server.events.values_list("progress", "message")),
    }


HEADERS = {**basic(), **JSON}


@pytest.mark.parametrize("path", [SERVICES, SERVICES + "/", "/services"])
def test_an_async_start_is_answered_directly_as_django_answers(outposts, direct, fallback, path):
    answer = post(direct, path, start_json("a"), {**HEADERS, **ASYNC})
    django_answer = post(api_application, path, start_json("b"), {**HEADERS, **ASYNC})
    assert fallback.calls == 0
    assert answer[0] == 202 and answer[2] == b'{"service":""}'
    assert same(answer, django_answer)
    assert row("a") == row("b")
    assert row("a")["status"] == Server.Status.REQUESTED


def test_a_sync_start_waits_directly_and_answers_as_django_answers(
    outposts, direct, fallback, short_sync_wait
):
    # given no worker: the wait runs out, and the Hub is to wait for the set-up-tunnel call
    answer = post(direct, SERVICES, start_json("a"), HEADERS)
    django_answer = post(api_application, SERVICES, start_json("b"), HEADERS)
    assert fallback.calls == 0
    assert answer[0] == 200 and answer[2] == b'{"service": ""}'
    assert same(answer, django_answer)
    assert row("a") == row("b")
    assert row("a")["address_via_callback"] is True


@pytest.mark.parametrize(
    "status, error, answered",
    [
        (Server.Status.RUNNING, "", (200, b'{"service": "10.0.0.7:8888"}')),
        (Server.Status.FAILED, "No node had room.", (419, None)),
    ],
    ids=["running", "failed"],
)
def test_a_repeated_sync_start_answers_its_servers_outcome_directly(
    outposts, direct, fallback, status, error, answered
):
    # given a start that has since run or failed
    post(direct, SERVICES, start_json("a"), {**HEADERS, **ASYNC})
    Server.objects.filter(name="a").update(status=status, address="10.0.0.7:8888", error=error)
    # when the Hub sends it again, synchronously
    answer = post(direct, SERVICES, start_json("a"), HEADERS)
    django_answer = post(api_application, SERVICES, start_json("a"), HEADERS)
    # then the direct path answers its outcome at once, as Django does, with no new server
    assert fallback.calls == 0
    assert same(answer, django_answer)
    assert answer[0] == answered[0]
    if answered[1] is not None:
        assert answer[2] == answered[1]
    else:
        assert json.loads(answer[2])["detail"] == error
    assert Server.objects.count() == 1


def test_a_refusal_is_answered_directly_as_django_answers_and_counted_once(
    outposts, direct, fallback
):
    # given the flavor's two servers running
    for name in ("a", "b"):
        post(direct, SERVICES, start_json(name), {**HEADERS, **ASYNC})
    # when a third start comes through each path
    answer = post(direct, SERVICES, start_json("c"), {**HEADERS, **ASYNC})
    django_answer = post(api_application, SERVICES, start_json("c"), {**HEADERS, **ASYNC})
    # then both refuse it alike, and each refusal is counted once
    assert fallback.calls == 0
    assert answer[0] == 419 and same(answer, django_answer)
    assert json.loads(answer[2])["detail"] == (
        "c - Start with small for hub1 not allowed. Maximum (2) already reached."
    )
    assert not Server.objects.filter(name="c").exists()
    refused = MetricCount.objects.get(name=STARTS_REFUSED)
    assert refused.value == 2


def test_a_repeated_async_start_is_answered_directly_with_the_same_server(
    outposts, direct, fallback
):
    first = post(direct, SERVICES, start_json("a"), {**HEADERS, **ASYNC})
    again = post(direct, SERVICES, start_json("a"), {**HEADERS, **ASYNC})
    assert fallback.calls == 0
    assert first[0] == again[0] == 202
    assert Server.objects.count() == 1


def test_a_start_the_broker_cannot_take_is_answered_503_directly(
    outposts, direct, fallback, private_redis
):
    # given a broker that is down
    with celery_app_broker(private_redis.url()):
        private_redis.stop()
        answer = post(direct, SERVICES, start_json("a"), {**HEADERS, **ASYNC})
        django_answer = post(api_application, SERVICES, start_json("b"), {**HEADERS, **ASYNC})
    # then the direct path tells the Hub to come back, as Django does, and withdrew the start
    assert fallback.calls == 0
    assert answer[0] == 503 and same(answer, django_answer)
    assert answer[1]["retry-after"].isdigit()
    for name in ("a", "b"):
        withdrawn = Server.objects.get(name=name)
        assert (withdrawn.status, withdrawn.error) == (Server.Status.FAILED, START_NOT_QUEUED)


@pytest.mark.parametrize(
    "path, headers, body, status",
    [
        (SERVICES, basic(secret="wrong"), start_json("a"), 401),
        (SERVICES, {}, start_json("a"), 401),
        ("/outposts/ungranted/services", basic(), start_json("a"), 404),
        ("/outposts/nowhere/services", basic(), start_json("a"), 404),
        # bodies the view refuses: not JSON, not an object, a name against the rules
        (SERVICES, basic(), b"{not json", 400),
        (SERVICES, basic(), b"[]", 400),
        (SERVICES, basic(), start_json("a b"), 400),
        # a rule only the service checks: no numeric user id
        (SERVICES, basic(), start_json("a", user_id="x"), 400),
        # the body is not sent as JSON
        (SERVICES, {**basic(), "Content-Type": "text/plain"}, start_json("a"), 415),
    ],
    ids=[
        "wrong-secret", "no-credentials", "ungranted-outpost", "unknown-outpost",
        "not-json", "not-an-object", "bad-name", "no-numeric-user-id", "not-sent-as-json",
    ],
)  # fmt: skip
def test_every_other_start_is_answered_by_the_django_handler(
    outposts, direct, fallback, path, headers, body, status
):
    headers = {"Content-Type": "application/json", **headers, **ASYNC}
    answer = post(direct, path, body, headers)
    django_answer = post(api_application, path, body, headers)
    assert fallback.calls == 1
    assert answer[0] == status and same(answer, django_answer)
    assert not Server.objects.exists()


def test_an_api_key_start_goes_through_the_django_handler(outposts, direct, fallback):
    _, key = hub_api_key_create(hub=outposts["hub"], name="k")
    headers = {"Authorization": f"token {key}", **JSON, **ASYNC}
    answer = post(direct, SERVICES, start_json("a"), headers)
    assert fallback.calls == 1
    assert answer[0] == 202 and Server.objects.filter(name="a").exists()


def test_a_direct_start_reads_the_grant_once_and_locks_the_outpost_once(
    outposts, django_assert_num_queries
):
    # given a live worker for the Outpost and a flavor without caps
    worker_heartbeat_record(queues=[outposts["local"].celery_queue], hostname="w1")
    outposts["small"].max = None
    outposts["small"].save()
    caller = direct_base.Caller(hub="hub1", secret=HUB_SECRET, slug="local")

    def start_request(name: str) -> Any:
        return direct_start.start_request_of(json.loads(start_json(name)), start_async=True)

    direct_start.start_run(caller, start_request("warm"))  # reads the flavor terms
    # when a start is run: the grant with the worker's stamp; in its transaction the lock,
    # the look-up of a twin, the server and its first event; then the admitted start's
    # metric. The deferred Hub and Outpost read nothing more.
    with django_assert_num_queries(6 + len(["BEGIN", "COMMIT"])):
        server, outpost = direct_start.start_run(caller, start_request("a"))
    assert server.hub == Hub.objects.get(name="hub1")
    assert outpost.pk == outposts["local"].pk


def test_the_one_start_serializer_keeps_nothing_of_one_body_for_the_next():
    # given a start's body, a body the serializer refuses, and another start's body
    first = json.loads(start_json("a", user_id="1"))
    refused = json.loads(start_json("b", env={"JUPYTERHUB_USER": "x"}))  # no user id
    second = json.loads(start_json("c", user_id="2"))
    # when they are read one after another by the direct path's one serializer
    read_first = direct_start.start_request_of(first, start_async=True)
    with pytest.raises(direct_base.NotDirect):
        direct_start.start_request_of(refused, start_async=True)
    read_second = direct_start.start_request_of(second, start_async=False)
    # then each start is its own body's, as a new serializer reads it
    for body, read, start_async in ((first, read_first, True), (second, read_second, False)):
        fresh = serializers.StartSerializer(data=body)
        assert fresh.is_valid(), fresh.errors
        assert read == fresh.to_start_request(start_async=start_async)
    assert (read_first.name, read_second.name, read_second.user_id) == ("a", "c", "2")


@pytest.mark.parametrize(
    ("stamps", "told"),
    [
        ({}, "has been seen yet"),
        ({"outpost.local": timedelta(minutes=7, seconds=10)}, "has been seen for 7 minutes"),
        ({"outpost.other": timedelta(seconds=1)}, "has been seen yet"),
        ({"outpost.local": timedelta(seconds=30)}, None),
    ],
)
def test_a_direct_start_tells_of_an_absent_worker_from_the_stamp_its_grant_read(
    outposts, settings, stamps, told
):
    # given the Outpost's queue stamped as given, live within 2 minutes
    settings.WORKER_SEEN_WITHIN = 120
    for queue, ago in stamps.items():
        WorkerHeartbeat.objects.create(queue=queue, hostname="w1", last_seen_at=now() - ago)
    caller = direct_base.Caller(hub="hub1", secret=HUB_SECRET, slug=None)
    request = direct_start.start_request_of(json.loads(start_json("a")), start_async=True)
    # when a start is run on the direct path
    server, _ = direct_start.start_run(caller, request)
    # then its progress tells of a worker not live, naming the Outpost and its queue
    messages = list(server.events.order_by("pk").values_list("message", flat=True))
    absence = (
        []
        if told is None
        else [
            f"No worker for Outpost {outposts['local'].name} {told}; "
            "the start waits in its queue (outpost.local)."
        ]
    )
    assert messages == ["Start request accepted.", *absence]
