"""A synchronous start and stop through the real path (uvicorn, a Celery worker, Redis) are
answered on the worker's wake-up: the web's safety re-read is set to 30 s, the answers must
come well before it."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import requests

from tests.factories import HubFactory, OutpostFactory
from tests.support.api import basic_auth, start_body
from tests.support.portal import web_process

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

RECHECK = 30
# The deadline for each answer: far below RECHECK, so only a wake-up can meet it.
DEADLINE = RECHECK / 3


@pytest.fixture
def site(celery_worker, tmp_path, settings, monkeypatch):
    settings.SERVER_CERTS_DIR = tmp_path / "certs"
    monkeypatch.setenv("PORTAL_SYNC_WAIT_RECHECK_SECONDS", str(RECHECK))
    slug = f"wake-{uuid.uuid4().hex[:8]}"
    outpost = OutpostFactory(
        slug=slug,
        spawner_class="tests.support.spawners.InstantSpawner",
        start_timeout=timedelta(minutes=2),
    )
    hub = HubFactory(name=f"hub-{slug}", outposts=[outpost])
    celery_worker(outpost.celery_queue)
    with web_process(tmp_path) as base:
        yield {
            "base": f"{base}/outposts/{slug}/services",
            "headers": {"Authorization": basic_auth(hub.name)},
        }


def test_a_sync_start_and_stop_are_answered_on_the_wake_up(site):
    started = requests.post(
        site["base"], json=start_body(), headers=site["headers"], timeout=DEADLINE
    )
    assert started.status_code == 200, started.text
    assert started.json()["service"] != ""
    stopped = requests.delete(f"{site['base']}/lab/s1", headers=site["headers"], timeout=DEADLINE)
    assert stopped.status_code == 200, stopped.text
