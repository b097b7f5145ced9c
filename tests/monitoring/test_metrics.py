"""/metrics: who may read it, and the counts it shows after real starts and refusals through
the API, on PostgreSQL, with the start tasks waiting in the real Redis broker."""

from __future__ import annotations

import ipaddress

import pytest

from outposts.models import Outpost, Server
from portal.celery import app as celery_app
from tests.factories import FlavorFactory, OutpostFactory
from tests.support.api import ASYNC, send, start_body
from tests.support.metrics import METRICS_TOKEN, scrape, scraped

pytestmark = pytest.mark.django_db

SERVICES = "/outposts/local/services"


@pytest.fixture
def metrics_token(settings):
    settings.METRICS_TOKEN = METRICS_TOKEN
    settings.METRICS_ALLOWED_NETWORKS = []
    return METRICS_TOKEN


@pytest.fixture
def empty_queues(outpost):
    """The test's Outpost queue and the default queue of the test broker hold no message."""
    with celery_app.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in ("celery", outpost.celery_queue):
            channel.queue_declare(queue=queue, durable=True, auto_delete=False)
            channel.queue_purge(queue)
    yield
    with celery_app.connection_for_write() as connection:
        for queue in ("celery", outpost.celery_queue):
            connection.default_channel.queue_purge(queue)


# --- Access ----------------------------------------------------------------------------------


def test_metrics_are_off_when_neither_a_token_nor_a_network_is_set(client, settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_NETWORKS = []
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer anything").status_code == 404


def test_metrics_need_the_token_when_one_is_set(client, metrics_token):
    # when no token, a wrong one, another scheme, the token as a prefix of the one sent
    answers = [
        client.get("/metrics"),
        client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong-token"),
        client.get("/metrics", HTTP_AUTHORIZATION=f"Basic {metrics_token}"),
        client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {metrics_token}x"),
    ]
    # then each is refused, saying how to authenticate
    assert [answer.status_code for answer in answers] == [401, 401, 401, 401]
    assert answers[0]["WWW-Authenticate"] == 'Bearer realm="metrics"'
    # and the token itself is let in
    answer = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {metrics_token}")
    assert answer.status_code == 200
    assert answer["Content-Type"].startswith("text/plain; version=")


def test_metrics_are_open_to_an_allowed_network_only(client, settings):
    # given only networks, none of them the test client's 127.0.0.1
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_NETWORKS = [ipaddress.ip_network("10.0.0.0/8")]
    assert client.get("/metrics").status_code == 403
    # when the client's network is allowed
    settings.METRICS_ALLOWED_NETWORKS = [
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("127.0.0.0/30"),
    ]
    assert client.get("/metrics").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 403


def test_a_short_metrics_token_stops_start_up(tmp_path):
    import subprocess
    import sys

    from tests.support.portal import ROOT

    # when the settings are read with a token of 10 characters
    result = subprocess.run(
        [sys.executable, "-c", "import tests.settings"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PORTAL_METRICS_TOKEN": "0123456789"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    # then the portal does not start, and says why
    assert result.returncode != 0
    assert "PORTAL_METRICS_TOKEN must be at least 24 characters" in result.stderr


# --- Counts ----------------------------------------------------------------------------------


def test_metrics_count_starts_admitted_and_refused_by_reason_and_servers_by_status(
    client,
    hub_client,
    outpost,
    metrics_token,
    empty_queues,
    django_capture_on_commit_callbacks,
):
    # given a flavor of which one server may run, and a second Outpost (its queue empty)
    FlavorFactory(outpost=outpost, name="small", max=1, weight=1)
    OutpostFactory(slug="elsewhere", state=Outpost.State.DRAINING)
    # when one start is admitted (its task queued in Redis when the row commits, and its
    # progress events for its Hub, which named where it takes them) ...
    env = {
        "JUPYTERHUB_USER": "user1",
        "JUPYTERHUB_USER_ID": "1",
        "JUPYTERHUB_EVENTS_URL": "http://127.0.0.1:9/hub/api/users/progress/events/user1/a",
    }
    with django_capture_on_commit_callbacks(execute=True):
        admitted = send(hub_client, "POST", SERVICES, start_body("a", "1", env=env), headers=ASYNC)
    # ... and four are refused: the flavor is full, no such flavor, another user's
    # start_id, and a repeat of the full flavor
    refused = [
        send(hub_client, "POST", SERVICES, start_body("b", "2", user_id="2"), headers=ASYNC),
        send(
            hub_client,
            "POST",
            SERVICES,
            start_body("c", "3", user_id="3", flavor="huge"),
            headers=ASYNC,
        ),
        send(hub_client, "POST", SERVICES, start_body("a", "1", user_id="4"), headers=ASYNC),
        send(hub_client, "POST", SERVICES, start_body("d", "4", user_id="5"), headers=ASYNC),
    ]
    # and a repeat of the admitted start, which is the same start, not a new one
    again = send(hub_client, "POST", SERVICES, start_body("a", "1"), headers=ASYNC)
    # then
    assert admitted.status_code == 202 and again.status_code == 202
    assert [answer.status_code for answer in refused] == [419, 419, 419, 419]
    metrics = scrape(client)
    assert metrics["portal_starts_admitted_total"] == {
        (("flavor", "small"), ("outpost", "local")): 1.0
    }
    assert metrics["portal_starts_refused_total"] == {
        (("outpost", "local"), ("reason", "flavor_max")): 2.0,
        (("outpost", "local"), ("reason", "flavor_not_allowed")): 1.0,
        (("outpost", "local"), ("reason", "start_id_taken")): 1.0,
    }
    assert metrics["portal_servers"] == {
        (("flavor", "small"), ("outpost", "local"), ("status", "requested")): 1.0
    }
    # and the start's task waits in the Outpost's queue, no worker serving it, and its two
    # progress events for the Hub ("accepted", "no worker seen") in the default queue
    assert metrics["portal_task_queue_depth"] == {
        (("queue", "outpost.local"),): 1.0,
        (("queue", "celery"),): 2.0,
        (("queue", "outpost.elsewhere"),): 0.0,
    }
    age = metrics["portal_task_queue_oldest_age_seconds"][(("queue", "outpost.local"),)]
    assert 0 < age < 600
    assert metrics["portal_broker_up"] == {(): 1.0}


def test_a_start_refused_because_the_outpost_is_draining_is_counted(
    client, hub_client, outpost, metrics_token
):
    outpost.state = Outpost.State.DRAINING
    outpost.save()
    assert send(hub_client, "POST", SERVICES, start_body(), headers=ASYNC).status_code == 419
    assert scrape(client)["portal_starts_refused_total"] == {
        (("outpost", "local"), ("reason", "outpost_state")): 1.0
    }


@pytest.mark.django_db(transaction=True)  # a start is counted once its transaction commits
def test_servers_that_ended_leave_the_server_gauge(client, hub_client, outpost, metrics_token):
    # given two starts admitted, of which one then stopped
    for name, start_id in (("a", "1"), ("b", "2")):
        send(hub_client, "POST", SERVICES, start_body(name, start_id), headers=ASYNC)
    Server.objects.filter(name="a").update(status=Server.Status.STOPPED)
    Server.objects.filter(name="b").update(status=Server.Status.RUNNING)
    # when / then the admitted count stays, the gauge shows the running one only
    metrics = scrape(client)
    assert metrics["portal_starts_admitted_total"] == {(("flavor", ""), ("outpost", "local")): 2.0}
    assert metrics["portal_servers"] == {
        (("flavor", ""), ("outpost", "local"), ("status", "running")): 1.0
    }


def test_the_broker_down_is_a_metric_not_a_failed_scrape(
    client, outpost, metrics_token, monkeypatch
):
    from tests.support.processes import free_port

    monkeypatch.setenv("CELERY_BROKER_URL", f"redis://127.0.0.1:{free_port()}/0")
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {metrics_token}")
    assert response.status_code == 200
    metrics = scraped(response.content.decode())
    assert metrics["portal_broker_up"] == {(): 0.0}
    assert "portal_task_queue_depth" not in metrics
