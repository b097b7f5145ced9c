"""Starts on an Outpost whose servers report their address, through the start task in this
process and the portal's call-back served by Django's live server: a local process and a
batch spawner (batchspawner's own start(), waiting for its port) both land at the address
their outpost-start-server reported; a server that never reports, or whose report is
refused, fails with a message that says so."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import pytest

from outposts import tasks
from outposts.models import Server
from outposts.runner.spawner import WAITING_FOR_ADDRESS
from tests.factories import OutpostFactory, ServerFactory
from tests.support.lifecycle import hub_env
from tests.support.processes import alive, json_if_up, wait_until
from tests.support.spawners import SERVE_SCRIPT, serve_config

pytestmark = pytest.mark.django_db(transaction=True)

WRAPPER = Path(__file__).resolve().parents[2] / "startserver" / "outpost_start_server.py"


@pytest.fixture
def serve_script(tmp_path) -> Path:
    script = tmp_path / "serve.py"
    script.write_text(SERVE_SCRIPT)
    return script


def reporting_outpost(live_server, tmp_path, **fields):
    values = {
        "slug": "hpc",
        "server_reports_address": True,
        "server_callback_url": live_server.url,
        "allowed_node_patterns": ["127.0.0.1"],
        "allowed_port_min": 21000,
        "allowed_port_max": 21999,
        "start_timeout": timedelta(seconds=60),
        "spawner_config": serve_config(
            tmp_path / "home",
            cmd=[sys.executable, str(WRAPPER), "--", sys.executable, "-c", SERVE_SCRIPT],
        ),
        **fields,
    }
    return OutpostFactory(**values)


def requested(outpost) -> Server:
    return ServerFactory(
        outpost=outpost,
        name="lab",
        user_name="olga",
        status=Server.Status.REQUESTED,
        address="",
        env=hub_env("olga", "lab"),
    )


def messages(server: Server) -> list[str]:
    return list(server.events.order_by("pk").values_list("message", flat=True))


def stop(server: Server) -> None:
    server.refresh_from_db()
    if server.is_active:
        tasks.server_stop_run_task(server.pk)


def test_a_local_server_lands_at_the_address_it_reported(live_server, tmp_path):
    # given
    server = requested(reporting_outpost(live_server, tmp_path))
    try:
        # when the start task runs
        tasks.server_start_run_task(server.pk)
        # then the server runs at what its wrapper reported, in the Outpost's port range
        server.refresh_from_db()
        assert server.status == Server.Status.RUNNING, (server.error, messages(server))
        assert server.address == server.reported_address
        host, port = server.address.rsplit(":", 1)
        assert host == "127.0.0.1" and 21000 <= int(port) <= 21999
        assert f"The server reported its address {server.address}." in messages(server)
        # and the server answers there, under its prefix
        seen = wait_until(lambda: json_if_up(f"http://{server.address}/user/olga/lab/"))
        assert seen["user"] == "olga"
        # the token reached only the wrapper, never the server
        assert "OUTPOST_CALLBACK_TOKEN" not in seen["env"]
    finally:
        stop(server)
    server.refresh_from_db()
    assert server.status == Server.Status.STOPPED


def test_a_batch_spawner_gets_its_port_from_the_call_back(live_server, tmp_path, serve_script):
    # given batchspawner's own start(), which loops until its port is set
    outpost = reporting_outpost(
        live_server,
        tmp_path,
        spawner_class="tests.support.batch.LocalBatchSpawner",
        spawner_config={
            "batchspawner_singleuser_cmd": f"{sys.executable} {WRAPPER} --report-host 127.0.0.1",
            "cmd": [sys.executable, str(serve_script)],
        },
    )
    server = requested(outpost)
    try:
        # when
        tasks.server_start_run_task(server.pk)
        # then it landed at the reported port (its own default is 0)
        server.refresh_from_db()
        assert server.status == Server.Status.RUNNING, (server.error, messages(server))
        assert server.address == server.reported_address
        assert server.address.startswith("127.0.0.1:21")
        job = int(server.spawner_state["job_id"])
        assert alive(job)
        assert WAITING_FOR_ADDRESS in messages(server)
        seen = wait_until(lambda: json_if_up(f"http://{server.address}/user/olga/lab/"))
        assert seen["user"] == "olga"
    finally:
        stop(server)
    # and stopping cancels the job
    wait_until(lambda: not alive(job), timeout=20)


def test_a_server_that_never_reports_fails_after_the_start_timeout(live_server, tmp_path):
    # given an Outpost whose spawner runs the server without the wrapper
    outpost = reporting_outpost(
        live_server,
        tmp_path,
        start_timeout=timedelta(seconds=6),
        spawner_config=serve_config(tmp_path / "home"),
    )
    server = requested(outpost)
    # when
    tasks.server_start_run_task(server.pk)
    # then the user saw the start wait for the address, then fail saying why
    server.refresh_from_db()
    assert server.status == Server.Status.FAILED
    assert server.error == (
        "The server did not report its address within 0.1 minutes: it must run through "
        "outpost-start-server and reach the portal from its node."
    )
    assert WAITING_FOR_ADDRESS in messages(server)
    assert server.events.filter(failed=True, message=server.error).exists()
    assert server.spawner_state is None  # what the spawner started was stopped


def test_a_refused_report_fails_the_start_without_waiting_for_the_timeout(live_server, tmp_path):
    # given an Outpost that does not allow the host the wrapper reports
    outpost = reporting_outpost(live_server, tmp_path, allowed_node_patterns=["node*.hpc"])
    server = requested(outpost)
    # when
    tasks.server_start_run_task(server.pk)
    # then the wrapper exited (refused) and the start failed on that, not on the timeout
    server.refresh_from_db()
    assert server.status == Server.Status.FAILED
    assert server.error == (
        "The server exited (status 77) before it reported its address; see its log on the Outpost."
    )
    assert server.reported_address == ""
