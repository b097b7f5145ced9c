"""The portal as it runs: uvicorn and a real Celery worker with JSON logs, a server started
through the HTTP API, and what /readyz, /metrics and the logs then say."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from datetime import timedelta

import pytest
import requests

from monitoring.models import MetricCount
from outposts import dispatch
from outposts.models import Server
from tests.factories import HUB_SECRET, HubFactory, OutpostFactory
from tests.support.metrics import METRICS_TOKEN, metric_values, scraped
from tests.support.portal import ROOT, portal_process_env, web_process
from tests.support.processes import wait_until
from tests.support.spawners import serve_config

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def json_lines(log: str) -> list[dict]:
    """The log's JSON lines (Celery's start-up banner is not a log line)."""
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


def test_a_start_is_ready_counted_and_logged_with_its_request_and_start_ids(
    celery_worker, tmp_path, settings, monkeypatch
):
    # given a portal whose processes log JSON, a metrics token, and an Outpost whose servers
    # are local processes, not served by any worker yet
    monkeypatch.setenv("PORTAL_LOG_FORMAT", "json")
    monkeypatch.setenv("PORTAL_METRICS_TOKEN", METRICS_TOKEN)
    monkeypatch.setenv("PORTAL_WORKER_HEARTBEAT_INTERVAL", "0.5")
    settings.SERVER_CERTS_DIR = tmp_path / "certs"
    slug = f"mon-{uuid.uuid4().hex[:8]}"
    outpost = OutpostFactory(
        slug=slug,
        spawner_config=serve_config(tmp_path / "home"),
        start_timeout=timedelta(minutes=2),
    )
    hub = HubFactory(name=f"hub-{slug}", outposts=[outpost])
    secret = base64.b64encode(f"{hub.name}:{HUB_SECRET}".encode()).decode()
    auth = {"Authorization": f"Basic {secret}"}
    metrics_auth = {"Authorization": f"Bearer {METRICS_TOKEN}"}

    with web_process(tmp_path) as base:
        # then, without a worker, the portal is alive but not ready
        assert requests.get(f"{base}/healthz", timeout=10).status_code == 200
        not_ready = requests.get(f"{base}/readyz", timeout=30)
        assert not_ready.status_code == 503
        assert not_ready.json()["Workers()"] == (
            f"Unavailable: No live worker for the queue(s) celery, outpost.{slug}"
        )

        # when a worker serves both queues, it is ready once the worker stamped them
        worker = celery_worker(outpost.celery_queue)
        wait_until(
            lambda: requests.get(f"{base}/readyz", timeout=30).status_code == 200,
            timeout=30,
            what="/readyz to answer 200",
            details=worker.log_tail,
        )

        # when a Hub starts a server with a request id of its own
        answer = requests.post(
            f"{base}/outposts/{slug}/services",
            json={
                "name": "lab",
                "env": {"JUPYTERHUB_USER": "ada", "JUPYTERHUB_USER_ID": "7"},
                "user_options": {"start_id": "st4rt"},
            },
            headers={**auth, "execution-type": "async", "X-Request-ID": "hub-req-42"},
            timeout=30,
        )
        assert answer.status_code == 202
        assert answer.headers["X-Request-ID"] == "hub-req-42"
        server = Server.objects.get(outpost=outpost)
        wait_until(
            lambda: Server.objects.get(pk=server.pk).status == Server.Status.RUNNING,
            timeout=60,
            what="the server to run",
            details=worker.log_tail,
        )
        # and one reconciler round runs on the Outpost's worker
        dispatch.queue_outpost_reconcile(outpost=outpost, expires=60)
        wait_until(
            lambda: metric_values("portal_reconcile_round_seconds_count"),
            timeout=30,
            what="a reconciler round to be counted",
            details=worker.log_tail,
        )
        # and a poll of a server that does not exist (a 404, which Django logs)
        missing = requests.get(
            f"{base}/outposts/{slug}/services/lab/n0pe", headers=auth, timeout=30
        )
        assert missing.status_code == 404

        # then the metrics, read by the web process from what the worker counted, say so
        scrape = requests.get(f"{base}/metrics", headers=metrics_auth, timeout=30)
        assert scrape.status_code == 200
        metrics = scraped(scrape.text)

        # (the server ends with the test: its process is the worker's child)
        stop = requests.delete(
            f"{base}/outposts/{slug}/services/lab/st4rt",
            headers={**auth, "execution-type": "async"},
            timeout=30,
        )
        assert stop.status_code == 202
        wait_until(
            lambda: Server.objects.get(pk=server.pk).status == Server.Status.STOPPED,
            timeout=60,
            what="the server to stop",
            details=worker.log_tail,
        )

    assert metrics["portal_starts_admitted_total"] == {(("flavor", ""), ("outpost", slug)): 1.0}
    assert metrics["portal_servers"] == {
        (("flavor", ""), ("outpost", slug), ("status", "running")): 1.0
    }
    assert metrics["portal_start_ready_seconds_count"] == {(("outpost", slug),): 1.0}
    ready_buckets = metrics["portal_start_ready_seconds_bucket"]
    assert ready_buckets[(("le", "+Inf"), ("outpost", slug))] == 1.0
    assert 0 < metrics["portal_start_ready_seconds_sum"][(("outpost", slug),)] < 120
    assert metrics["portal_reconcile_round_seconds_count"] == {(("outpost", slug),): 1.0}
    assert metrics["portal_queue_worker_live"] == {
        (("queue", "celery"),): 1.0,
        (("queue", f"outpost.{slug}"),): 1.0,
    }

    # and every log line of the start in the worker is a JSON object that names the Hub's
    # request id and the start_id, with the task's own id
    worker_lines = json_lines(worker.log())
    start_lines = [line for line in worker_lines if line["logger"] == "outposts.lifecycle.start"]
    assert start_lines, worker.log_tail()
    assert {(line["request_id"], line["start_id"]) for line in start_lines} == {
        ("hub-req-42", "st4rt")
    }
    assert all(line["task_id"] for line in start_lines)
    assert any("is running at" in line["message"] for line in start_lines)
    # and the web process's line about the 404 names its own request id and the start_id
    web_log = (tmp_path / "web.log").read_text()
    (not_found,) = [
        line
        for line in json_lines(web_log)
        if line["logger"] == "django.request" and "n0pe" in line["message"]
    ]
    assert not_found["start_id"] == "n0pe"
    assert not_found["request_id"] == missing.headers["X-Request-ID"]
    assert not_found["level"] == "WARNING"


def test_counts_from_several_processes_at_once_all_add_up(tmp_path):
    # given four processes of the portal (as four web processes would be)
    script = (
        "import django; django.setup()\n"
        "from outposts.models import Outpost\n"
        "from monitoring.services import start_refused_count\n"
        "outpost = Outpost(slug='busy')\n"
        "for _ in range(50):\n"
        "    start_refused_count(outpost=outpost, reason='flavor_max')\n"
    )
    env = portal_process_env(tmp_path)
    # when each counts 50 refusals, at the same time
    processes = [
        subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env) for _ in range(4)
    ]
    codes = [process.wait(timeout=120) for process in processes]
    # then not one count is lost
    assert codes == [0, 0, 0, 0]
    assert metric_values("portal_starts_refused_total") == {
        (("outpost", "busy"), ("reason", "flavor_max")): 200.0
    }
    assert MetricCount.objects.count() == 1
