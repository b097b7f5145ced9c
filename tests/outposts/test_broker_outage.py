"""Broker outages through the API, in this process: the Celery app publishes to a private
redis-server that the test stops and starts again (tests/support/redis_server.py). No worker
runs here; what reached the broker is read from its queues. The end-to-end version with a
real worker, beat and web server is tests/e2e/test_broker_outage.py."""

from __future__ import annotations

import base64
import json
import logging
from datetime import timedelta

import pytest
import redis
from django.utils import timezone

from monitoring.models import MetricCount
from monitoring.services import STARTS_ADMITTED
from outposts.lifecycle.end import server_mark_failed
from outposts.lifecycle.reconcile import outpost_reconcile
from outposts.lifecycle.start import START_ATTEMPT_DIED
from outposts.models import Server
from outposts.services import START_NOT_QUEUED
from tests.factories import FlavorFactory, ServerFactory
from tests.support.api import ASYNC, BASE, send, start_body
from tests.support.redis_server import celery_app_broker

# Publishes commit first: the API's own transactions must really commit here.
pytestmark = pytest.mark.django_db(transaction=True)

QUEUE = "outpost.local"


@pytest.fixture
def broker(private_redis, short_sync_wait):
    """This process publishes to the private Redis; its client reads what was queued. (No
    worker runs: a synchronous start that got through gives up waiting at once.)"""
    client = redis.Redis(port=private_redis.port)
    with celery_app_broker(private_redis.url()):
        yield client
    client.close()


def queued(client: redis.Redis, queue: str = QUEUE) -> list[tuple[str, list]]:
    """The tasks waiting in ``queue``, oldest first, as (task name, args)."""
    messages = [json.loads(raw) for raw in reversed(client.lrange(queue, 0, -1))]
    return [
        (
            message["headers"]["task"].rsplit(".", 1)[1],
            # The body is [args, kwargs, embed], base64-encoded JSON; the first arg is the id.
            json.loads(base64.b64decode(message["body"]))[0][0],
        )
        for message in messages
    ]


def test_a_start_while_the_broker_is_down_answers_503_and_holds_no_slot(
    hub_client, outpost, broker, private_redis, caplog
):
    # given a flavor with room for one server, and a broker that is down
    FlavorFactory(outpost=outpost, name="small", max=1)
    private_redis.stop()
    # when a Hub starts a server (synchronously, as stock Hubs do)
    with caplog.at_level(logging.WARNING):
        response = send(hub_client, "POST", BASE + "services", start_body(start_id="s1"))
    # then it is told to come back, in the contract's error shape
    assert response.status_code == 503
    assert response.headers["Retry-After"].isdigit()
    body = response.json()
    assert (body["module"], body["class"], body["traceback"]) == (
        "outposts.errors",
        "TaskQueueUnavailable",
        "",
    )
    assert "the start was not accepted" in body["detail"]
    assert "Traceback" not in caplog.text
    # and the start holds nothing: withdrawn, hidden from the Hub, not counted
    withdrawn = Server.objects.get()
    assert (withdrawn.status, withdrawn.error) == (Server.Status.FAILED, START_NOT_QUEUED)
    assert withdrawn.removed_at is not None
    flavors = send(hub_client, "GET", BASE + "flavors/")
    assert (flavors.status_code, flavors.json()["small"]["current"]) == (200, 0)
    assert send(hub_client, "GET", BASE + "services/").json() == []
    assert send(hub_client, "GET", BASE + "services/lab/s1").status_code == 404


def test_a_withdrawn_start_is_not_counted_as_admitted(hub_client, outpost, broker, private_redis):
    # given a start withdrawn while the broker was down, and one queued once it is back
    private_redis.stop()
    assert send(hub_client, "POST", BASE + "services", start_body(start_id="s1")).status_code == 503
    private_redis.start()
    queued_start = send(
        hub_client, "POST", BASE + "services", start_body(start_id="s2"), headers=ASYNC
    )
    assert queued_start.status_code == 202
    # then only the queued one counts as admitted
    [admitted] = MetricCount.objects.filter(name=STARTS_ADMITTED)
    assert admitted.value == 1


def test_the_same_start_after_the_broker_is_back_is_queued_at_once(
    hub_client, outpost, broker, private_redis
):
    # given a start refused while the broker was down, with the only slot of its flavor
    FlavorFactory(outpost=outpost, name="small", max=1)
    private_redis.stop()
    assert send(hub_client, "POST", BASE + "services", start_body()).status_code == 503
    # when the broker is back and the Hub sends the same start again
    private_redis.start()
    response = send(hub_client, "POST", BASE + "services", start_body(), headers=ASYNC)
    # then it is admitted (the withdrawn one held no slot) and its task is queued
    assert response.status_code == 202
    server = Server.objects.visible().get()
    assert server.status == Server.Status.REQUESTED
    assert queued(broker) == [("server_start_run_task", server.pk)]


def test_a_start_task_names_its_server_but_not_its_tls_material_in_its_headers(
    hub_client, outpost, broker
):
    # when a Hub starts a server with internal SSL
    body = start_body()
    body["certs"] = {"keyfile": "KEY", "certfile": "CERT", "cafile": "CA"}
    response = send(hub_client, "POST", BASE + "services", body, headers=ASYNC)
    assert response.status_code == 202
    # then the task carries the material, encrypted, in its arguments ...
    server = Server.objects.get()
    [message] = [json.loads(raw) for raw in broker.lrange(QUEUE, 0, -1)]
    args = json.loads(base64.b64decode(message["body"]))[0]
    assert args[0] == server.pk
    assert args[1] and "KEY" not in args[1]
    # ... while what monitoring and the worker's logs show of them names the server only
    assert message["headers"]["argsrepr"] == f"({server.pk}, <TLS material>)"


def test_polls_lists_flavors_and_events_answer_from_the_database_while_the_broker_is_down(
    hub_client, outpost, hub, broker, private_redis
):
    # given a running server, and a broker that is down
    FlavorFactory(outpost=outpost, name="small")
    server = ServerFactory(hub=hub, outpost=outpost, name="lab", start_id="s1")
    server.events.create(progress=100, message="Server ready.", ready=True)
    private_redis.stop()
    # when the Hub polls, lists, reads flavors and events
    poll = send(hub_client, "GET", BASE + "services/lab/s1")
    listing = send(hub_client, "GET", BASE + "services/")
    flavors = send(hub_client, "GET", BASE + "flavors/")
    events = send(hub_client, "GET", BASE + "services/lab/s1/events")
    # then every one answers from the database
    assert (poll.status_code, poll.json()["status"]) == (200, None)
    assert [row["name"] for row in listing.json()] == ["lab"]
    assert flavors.status_code == 200
    assert [event["message"] for event in events.json()["events"]] == ["Server ready."]


def test_a_stop_while_the_broker_is_down_is_kept_and_a_repeated_stop_queues_it(
    hub_client, outpost, hub, broker, private_redis
):
    # given a running server, and a broker that is down
    server = ServerFactory(hub=hub, outpost=outpost, name="lab", start_id="s1")
    private_redis.stop()
    # when the Hub stops it
    response = send(hub_client, "DELETE", BASE + "services/lab/s1")
    # then it is told to come back, the stop is recorded and marked for the reconciler
    assert response.status_code == 503
    assert "the stop is recorded" in response.json()["detail"]
    server.refresh_from_db()
    assert server.status == Server.Status.STOPPING
    assert server.stop_unqueued_since is not None
    assert server.removed_at is None  # still the Hub's: its poll answers until it ends
    assert send(hub_client, "GET", BASE + "services/lab/s1").json()["status"] is None
    # when the broker is back and the Hub repeats the stop
    private_redis.start()
    response = send(hub_client, "DELETE", BASE + "services/lab/s1", headers=ASYNC)
    # then the stop task is queued at once, and the mark is gone
    assert response.status_code == 202
    assert queued(broker) == [("server_stop_run_task", server.pk)]
    server.refresh_from_db()
    assert server.stop_unqueued_since is None


def test_the_reconciler_queues_a_stop_that_never_reached_the_broker(
    hub_client, outpost, hub, broker, private_redis
):
    # given a stop made while the broker was down, which the Hub never repeats
    server = ServerFactory(hub=hub, outpost=outpost, name="lab", start_id="s1")
    private_redis.stop()
    assert send(hub_client, "DELETE", BASE + "services/lab/s1").status_code == 503
    # when the broker is back and the reconciler's round runs
    private_redis.start()
    outpost_reconcile(outpost_id=outpost.pk)
    # then it queued the stop task, once
    stops = [task for task in queued(broker) if task[0] == "server_stop_run_task"]
    assert stops == [("server_stop_run_task", server.pk)]
    server.refresh_from_db()
    assert server.stop_unqueued_since is None
    outpost_reconcile(outpost_id=outpost.pk)
    assert [task for task in queued(broker) if task[0] == "server_stop_run_task"] == stops


def test_a_round_while_the_broker_is_down_keeps_the_stop_marked(
    hub_client, outpost, hub, broker, private_redis
):
    # given a stop whose task never reached the broker
    server = ServerFactory(hub=hub, outpost=outpost, name="lab", start_id="s1")
    private_redis.stop()
    assert send(hub_client, "DELETE", BASE + "services/lab/s1").status_code == 503
    # when a round runs while the broker is still down
    outpost_reconcile(outpost_id=outpost.pk)
    # then the stop stays marked for the next round
    server.refresh_from_db()
    assert (server.status, server.stop_unqueued_since is not None) == (
        Server.Status.STOPPING,
        True,
    )


def test_hub_call_backs_that_cannot_be_queued_never_fail_the_end_of_a_server(
    outpost, hub, broker, private_redis, caplog
):
    # given a pending server of a Hub that takes flavor updates, and a broker that is down
    server = ServerFactory(
        hub=hub,
        outpost=outpost,
        status=Server.Status.PENDING,
        env={"JUPYTERHUB_FLAVORS_UPDATE_URL": "http://hub.example/hub/api/outpostflavors/x"},
    )
    private_redis.stop()
    # when it fails (which queues a failed event and a flavor update for the Hub)
    with caplog.at_level(logging.WARNING, logger="outposts.dispatch"):
        ended = server_mark_failed(server_id=server.pk, error="It broke.")
    # then it ended all the same; the call-backs are logged as dropped
    assert ended.status == Server.Status.FAILED
    assert "hub_flavors_send_task" in caplog.text and "dropped" in caplog.text


def test_the_reconciler_fails_a_start_whose_lease_ran_out_long_before_its_start_timeout(
    outpost, hub, broker
):
    # given a pending start (8 hours' start timeout) whose attempt stopped renewing its
    # lease a moment ago, and one whose attempt is alive
    outpost.start_timeout = timedelta(hours=8)
    outpost.save()
    now = timezone.now()
    dead = ServerFactory(
        hub=hub,
        outpost=outpost,
        status=Server.Status.PENDING,
        started_at=now - timedelta(minutes=3),
        start_lease_until=now - timedelta(seconds=1),
    )
    alive = ServerFactory(
        hub=hub,
        outpost=outpost,
        status=Server.Status.PENDING,
        started_at=now - timedelta(minutes=3),
        start_lease_until=now + timedelta(minutes=1),
    )
    # when the reconciler's round runs
    outpost_reconcile(outpost_id=outpost.pk)
    # then the dead attempt's start ended failed, saying why; the live one is left alone
    dead.refresh_from_db()
    alive.refresh_from_db()
    assert (dead.status, dead.error) == (Server.Status.FAILED, START_ATTEMPT_DIED)
    assert dead.events.get(failed=True).message == START_ATTEMPT_DIED
    assert (alive.status, alive.start_lease_until) == (
        Server.Status.PENDING,
        now + timedelta(minutes=1),
    )
