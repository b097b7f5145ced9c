"""A server's whole life through the HTTP API, a real Celery worker and jupyterhub-singleuser."""

from __future__ import annotations

import base64
import os
import signal
import uuid
from datetime import timedelta

import pytest
import requests

from outposts.models import Server
from tests.factories import HUB_SECRET, HubFactory, OutpostFactory
from tests.support.processes import alive, free_port, json_if_up, wait_until
from tests.support.spawners import serve_config, singleuser_config

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

STOCK_MISC = {  # what a stock Hub always sends; none of it is allow-listed here
    "dns_name_template": "{name}.{namespace}.svc.cluster.local",
    "pod_name_template": "jupyter-{username}--{servername}",
    "internal_ssl": False,
    "port": 51285,
    "ip": "0.0.0.0",
    "services_enabled": True,
    "extra_labels": {},
}


@pytest.fixture
def site(celery_worker, portal_web, tmp_path, settings):
    """An Outpost served by uvicorn, with its own worker; servers left over are killed."""
    settings.SERVER_CERTS_DIR = tmp_path / "certs"
    slug = f"e2e-{uuid.uuid4().hex[:8]}"
    outpost = OutpostFactory(
        slug=slug,
        spawner_config=singleuser_config(tmp_path / "home"),
        start_timeout=timedelta(minutes=2),
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
    return {
        "name": "lab",
        "env": env,
        "user_options": {"start_id": "abc123"},
        "misc": STOCK_MISC,
        "certs": {},
        "internal_trust_bundles": {},
    }


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_start_use_and_stop_a_jupyter_server_through_the_api(site, fake_hub, mode):
    # given
    headers = dict(site["headers"])
    if mode == "async":
        headers["execution-type"] = "async"
    # when the Hub starts a server
    answer = requests.post(
        site["base"], json=start_body(fake_hub.env("olga", "lab")), headers=headers, timeout=90
    )
    # then
    if mode == "async":
        assert (answer.status_code, answer.json()) == (202, {"service": ""})
        # the Hub learns the address from the set-up-tunnel call once the server runs
        call = wait_until(lambda: fake_hub.posts("/users/setuptunnel/olga/lab"), timeout=60)[0]
        assert call.authorization == "token server-token"
        address = call.body["service"]
    else:
        assert answer.status_code == 200, answer.text
        address = answer.json()["service"]
        assert fake_hub.posts("/users/setuptunnel") == []
    server = Server.objects.get(outpost=site["outpost"], name="lab", start_id="abc123")
    assert server.status == Server.Status.RUNNING
    assert address == server.address
    assert not address.endswith(":51285")  # the spawner's port, not the Hub's guess
    poll = requests.get(f"{site['base']}/lab/abc123", headers=site["headers"], timeout=10)
    assert poll.json() == {"status": None, "logs": []}
    listed = requests.get(f"{site['base']}/", headers=site["headers"], timeout=10).json()
    assert [(s["name"], s["start_id"]) for s in listed] == [("lab", "abc123")]
    # the real jupyterhub-singleuser answers under the server's prefix (once it is up: the
    # Hub waits for that too, after it got the address)
    status = wait_until(lambda: json_if_up(f"http://{address}/user/olga/lab/api"), timeout=60)
    assert "version" in status
    # and the Hub saw progress up to ready, and a flavor update
    events = wait_until(lambda: fake_hub.posts("/users/progress/events/olga/lab"))
    wait_until(
        lambda: any(
            e.body["progress"] == 100 for e in fake_hub.calls if e.body and "progress" in e.body
        )
    )
    assert all(e.authorization == "token server-token" for e in events)
    wait_until(lambda: fake_hub.posts("/outpostflavors/"))
    pid = server.spawner_state["pid"]

    # when the Hub deletes the server
    stop = requests.delete(f"{site['base']}/lab/abc123", headers=headers, timeout=90)
    # then
    if mode == "async":
        assert stop.status_code == 202
    else:
        assert stop.status_code == 200, stop.text
    wait_until(lambda: Server.objects.get(pk=server.pk).status == Server.Status.STOPPED, timeout=60)
    wait_until(lambda: not alive(pid), timeout=30)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://{address}/user/olga/lab/api", timeout=5)
    gone = requests.get(f"{site['base']}/lab/abc123", headers=site["headers"], timeout=10)
    assert gone.status_code == 404


def test_a_hub_that_is_down_does_not_fail_a_start(site, tmp_path):
    # given a Hub whose call-back URLs do not answer (the light server needs no Hub)
    outpost = site["outpost"]
    outpost.spawner_config = serve_config(tmp_path / "home")
    outpost.save()
    dead = f"http://127.0.0.1:{free_port()}/hub/api"
    env = {
        "JUPYTERHUB_USER": "olga",
        "JUPYTERHUB_USER_ID": "7",
        "JUPYTERHUB_API_TOKEN": "server-token",
        "JUPYTERHUB_SERVICE_PREFIX": "/user/olga/lab/",
        "JUPYTERHUB_SERVICE_URL": "http://0.0.0.0:51285/user/olga/lab/",
        "JUPYTERHUB_EVENTS_URL": f"{dead}/users/progress/events/olga/lab",
        "JUPYTERHUB_FLAVORS_UPDATE_URL": f"{dead}/outpostflavors/x",
        "JUPYTERHUB_FLAVORS_UPDATE_TOKEN": "t",
    }
    # when
    answer = requests.post(site["base"], json=start_body(env), headers=site["headers"], timeout=90)
    # then
    assert answer.status_code == 200, answer.text
    address = answer.json()["service"]
    assert wait_until(lambda: json_if_up(f"http://{address}/user/olga/lab/"))["user"] == "olga"
    stop = requests.delete(f"{site['base']}/lab/abc123", headers=site["headers"], timeout=90)
    assert stop.status_code == 200
