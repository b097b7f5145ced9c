"""A delayed start end to end: the portal's web server (uvicorn) and a real Celery worker, a
stock Hub (the stand-in recording its calls) and a real jupyterhub-singleuser run through
outpost-start-server. The wrapper reports its address; the Hub then gets it (set-up-tunnel
call, or the synchronous answer), our hubclient's events poll shows it, and JupyterLab's
API answers there."""

from __future__ import annotations

import base64
import os
import signal
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import requests

from outposts.models import Server
from tests.factories import HUB_SECRET, HubFactory, OutpostFactory
from tests.support.portal import celery_worker, portal_web  # noqa: F401 - fixtures
from tests.support.processes import alive, json_if_up, wait_until
from tests.support.spawners import singleuser_config

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

WRAPPER = Path(__file__).resolve().parents[2] / "startserver" / "outpost_start_server.py"
SINGLEUSER = str(Path(sys.executable).parent / "jupyterhub-singleuser")


@pytest.fixture
def site(celery_worker, portal_web, tmp_path, settings):  # noqa: F811 - fixtures
    """An Outpost whose servers report their address to the portal served by uvicorn."""
    settings.SERVER_CERTS_DIR = tmp_path / "certs"
    slug = f"delayed-{uuid.uuid4().hex[:8]}"
    outpost = OutpostFactory(
        slug=slug,
        spawner_config=singleuser_config(
            tmp_path / "home", cmd=[sys.executable, str(WRAPPER), "--", SINGLEUSER, "--allow-root"]
        ),
        start_timeout=timedelta(minutes=2),
        server_reports_address=True,
        server_callback_url=portal_web,
        allowed_node_patterns=["127.0.0.1"],
        allowed_port_min=22000,
        allowed_port_max=22999,
    )
    hub = HubFactory(name=f"hub-{slug}", outposts=[outpost])
    celery_worker(outpost.celery_queue)
    auth = base64.b64encode(f"{hub.name}:{HUB_SECRET}".encode()).decode()
    yield {
        "outpost": outpost,
        "base": f"{portal_web}/outposts/{slug}/services",
        "headers": {"Authorization": f"Basic {auth}"},
    }
    for state in Server.objects.exclude(spawner_state=None).values_list("spawner_state", flat=True):
        pid = (state or {}).get("pid")
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)


def start_body(env: dict) -> dict:
    return {"name": "lab", "env": env, "user_options": {"start_id": "d1"}, "misc": {}}


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_a_delayed_start_reaches_jupyterlab_at_the_reported_address(site, fake_hub, mode):
    # given
    headers = dict(site["headers"])
    if mode == "async":
        headers["execution-type"] = "async"
    # when a stock Hub starts a server
    answer = requests.post(
        site["base"], json=start_body(fake_hub.env("olga", "lab")), headers=headers, timeout=90
    )
    # then the Hub learns the address the wrapper reported
    if mode == "async":
        assert (answer.status_code, answer.json()) == (202, {"service": ""})
        call = wait_until(lambda: fake_hub.posts("/users/setuptunnel/olga/lab"), timeout=90)[0]
        assert call.authorization == "token server-token"
        address = call.body["service"]
    else:
        assert answer.status_code == 200, answer.text
        address = answer.json()["service"]
    server = Server.objects.get(outpost=site["outpost"], name="lab", start_id="d1")
    assert server.status == Server.Status.RUNNING
    assert address == server.address == server.reported_address
    host, port = address.rsplit(":", 1)
    assert host == "127.0.0.1" and 22000 <= int(port) <= 22999
    # and the hubclient's poll of the start's events gives it too, after the progress steps
    events = requests.get(f"{site['base']}/lab/d1/events", headers=site["headers"], timeout=10)
    assert events.json()["service"] == address
    assert events.json()["status"] == "running"
    shown = [event["message"] for event in events.json()["events"]]
    assert f"The server reported its address {address}." in shown
    assert shown[-1] == "Server ready."
    # and JupyterLab's server answers there, under the user's prefix
    status = wait_until(lambda: json_if_up(f"http://{address}/user/olga/lab/api"), timeout=90)
    assert "version" in status

    # when the Hub deletes it, the server (the wrapper's own process) is gone
    pid = server.spawner_state["pid"]
    stop = requests.delete(f"{site['base']}/lab/d1", headers=site["headers"], timeout=90)
    assert stop.status_code == 200, stop.text
    wait_until(lambda: not alive(pid), timeout=30)
