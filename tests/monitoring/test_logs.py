"""The request id (X-Request-ID), the ids on log records, and the JSON log format."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys

import pytest

from monitoring.logcontext import LogContextFilter, log_context
from outposts import tasks
from tests.factories import ServerFactory
from tests.support.lifecycle import hub_env
from tests.support.portal import ROOT
from tests.support.spawners import serve_config

FRESH_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def records(caplog):
    """Log records as the portal's handlers see them: with LOGGING's log_context filter."""
    caplog.handler.addFilter(LogContextFilter())
    caplog.set_level(logging.INFO)
    return caplog


def test_every_answer_has_a_request_id_made_for_it(client):
    first, second = client.get("/healthz"), client.get("/healthz")
    assert FRESH_ID.fullmatch(first["X-Request-ID"])
    assert first["X-Request-ID"] != second["X-Request-ID"]


def test_a_clients_short_safe_request_id_is_kept(client):
    response = client.get("/healthz", HTTP_X_REQUEST_ID="hub-7f3a:req.42_x")
    assert response["X-Request-ID"] == "hub-7f3a:req.42_x"


@pytest.mark.parametrize(
    "unsafe",
    ["a" * 65, "two words", "caf\u00e9", "esc\x1b[31m", "tab\tid", ""],
    ids=["too-long", "space", "non-ascii", "control", "tab", "empty"],
)
def test_an_unsafe_request_id_is_replaced(client, unsafe):
    response = client.get("/healthz", HTTP_X_REQUEST_ID=unsafe)
    assert FRESH_ID.fullmatch(response["X-Request-ID"])


@pytest.mark.django_db
def test_a_requests_log_lines_carry_its_request_id_and_the_servers_start_id(hub_client, records):
    # when a Hub polls a server that does not exist (Django logs the 404)
    response = hub_client.get("/outposts/local/services/lab/s9", HTTP_X_REQUEST_ID="req-1")
    # then
    assert response.status_code == 404
    (line,) = [r for r in records.records if r.name == "django.request"]
    assert (line.request_id, line.start_id) == ("req-1", "s9")


def test_ids_are_set_for_a_block_only_and_left_out_when_not_set(records):
    log = logging.getLogger("outposts.test")
    with log_context(start_id="abc", task_id="t1"):
        log.info("inside")
    log.info("outside")
    inside, outside = records.records
    assert (inside.start_id, inside.task_id) == ("abc", "t1")
    assert not hasattr(inside, "request_id")
    assert not hasattr(outside, "start_id")


def log_lines(log_format: str, code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a portal process with PORTAL_LOG_FORMAT=``log_format``."""
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup()\n{code}"],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "PORTAL_LOG_FORMAT": log_format,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_json_logs_are_one_object_a_line_with_the_ids():
    # when a portal process with JSON logs logs a message with a line break, in a start's
    # context, and an error with its traceback
    result = log_lines(
        "json",
        "import logging\n"
        "from monitoring.logcontext import log_context\n"
        "log = logging.getLogger('outposts.lifecycle.start')\n"
        "with log_context(request_id='r1', start_id='s1'):\n"
        "    log.warning('forged\\n2026-01-01 INFO %s', 'line')\n"
        "try:\n"
        "    1 / 0\n"
        "except ZeroDivisionError:\n"
        "    log.exception('failed')\n",
    )
    # then stderr holds exactly two lines, each one JSON object
    assert result.returncode == 0, result.stderr
    first, second = (json.loads(line) for line in result.stderr.splitlines())
    assert first["message"] == "forged\n2026-01-01 INFO line"
    assert (first["level"], first["logger"]) == ("WARNING", "outposts.lifecycle.start")
    assert (first["request_id"], first["start_id"]) == ("r1", "s1")
    assert "time" in first
    assert second["message"] == "failed"
    assert "ZeroDivisionError" in second["exc_info"]
    assert "request_id" not in second


def test_plain_logs_stay_as_they_were():
    result = log_lines("", "import logging\nlogging.getLogger('outposts').warning('hello')")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"\S+ \S+ WARNING outposts hello\n", result.stderr)


def test_an_unknown_log_format_stops_start_up():
    result = log_lines("xml", "")
    assert result.returncode != 0
    assert "PORTAL_LOG_FORMAT must be plain or json, not 'xml'" in result.stderr


@pytest.mark.django_db
def test_the_reconcilers_lines_about_a_server_carry_its_start_id(outpost, hub, records, tmp_path):
    # given a running server on a system that cannot be asked
    outpost.spawner_class = "tests.support.spawners.UnreachableSpawner"
    outpost.spawner_config = serve_config(tmp_path / "home")
    outpost.save()
    ServerFactory(
        hub=hub,
        outpost=outpost,
        start_id="st-77",
        user_name="olga",
        env=hub_env("olga", "lab"),
        spawner_state={"pid": 0},
    )
    # when a reconciler round polls it
    tasks.outpost_reconcile_task(outpost.pk)
    # then the line saying so names the server's start_id
    (line,) = [r for r in records.records if r.getMessage().startswith("Cannot poll server")]
    assert line.start_id == "st-77"
