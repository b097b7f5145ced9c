"""/healthz and /readyz: liveness asks nothing, readiness asks the real PostgreSQL, the real
Redis broker and the workers' stamps (outposts/workers.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from outposts.models import Outpost, WorkerHeartbeat
from outposts.workers import worker_heartbeat_record
from tests.factories import OutpostFactory
from tests.support.processes import free_port


def test_healthz_answers_without_asking_the_database(client):
    # given no database access at all (pytest-django raises on any query without the db mark)
    # when
    response = client.get("/healthz")
    # then
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response["Cache-Control"].startswith("max-age=0")


@pytest.mark.django_db
def test_readyz_is_ready_when_database_broker_and_every_queue_has_a_live_worker(client, outpost):
    # given workers stamped the default queue and the Outpost's queue just now
    worker_heartbeat_record(queues=["celery", outpost.celery_queue], hostname="w@host")
    # when
    response = client.get("/readyz")
    # then
    assert response.status_code == 200
    assert response.json() == {
        "Database(alias='default')": "OK",
        "Broker()": "OK",
        "Workers()": "OK",
    }


@pytest.mark.django_db
def test_readyz_names_each_queue_without_a_live_worker(client, outpost, settings):
    # given the default queue stamped now, the Outpost's last stamp too old, a second Outpost
    # never stamped and a disabled one (which needs no worker)
    settings.WORKER_SEEN_WITHIN = 60
    worker_heartbeat_record(queues=["celery"], hostname="central@host")
    WorkerHeartbeat.objects.create(
        queue=outpost.celery_queue,
        hostname="local@host",
        last_seen_at=timezone.now() - timedelta(minutes=5),
    )
    OutpostFactory(slug="hpc")
    OutpostFactory(slug="old", state=Outpost.State.DISABLED)
    # when
    response = client.get("/readyz")
    # then
    assert response.status_code == 503
    assert response.json()["Workers()"] == (
        "Unavailable: No live worker for the queue(s) outpost.hpc, outpost.local"
    )
    assert response.json()["Broker()"] == "OK"


@pytest.mark.django_db
def test_readyz_is_not_ready_when_the_broker_cannot_be_reached(client, outpost, monkeypatch):
    # given workers seen, but a broker URL where nothing listens
    worker_heartbeat_record(queues=["celery", outpost.celery_queue], hostname="w@host")
    # (Celery reads CELERY_BROKER_URL from the environment before its settings)
    monkeypatch.setenv("CELERY_BROKER_URL", f"redis://127.0.0.1:{free_port()}/0")
    # when
    response = client.get("/readyz")
    # then the answer says which check failed, without the error's details
    assert response.status_code == 503
    assert response.json()["Broker()"] == (
        "Unavailable: The broker cannot be reached (OperationalError)"
    )
    assert response.json()["Workers()"] == "OK"
