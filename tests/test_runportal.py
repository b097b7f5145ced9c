"""runportal runs web and worker, with beat and the tunnel agent in the worker (and, on the
embedded default, the private Redis) in the foreground, restarts a part that exits, and
leaves nothing behind."""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.support.portal import portal_process_env
from tests.support.processes import alive, free_port, response_if_up, wait_until
from tests.support.runportal import (
    RunningPortal,
    configure_instant_outpost,
    embedded_default,
    hub_session,
    instant_start,
    session_processes,
)

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.e2e


def processes_in_session(sid: int) -> list[str]:
    """Command lines of the live (not zombie) processes whose session id is ``sid``."""
    return [cmdline for _, cmdline in session_processes(sid)]


@pytest.fixture
def portal_env(tmp_path):
    """A throwaway SQLite database and filesystem broker, migrated."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PORTAL_DATA_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'portal.sqlite3'}",
        "CELERY_BROKER_URL": "filesystem://",
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"], cwd=REPO, env=env, check=True, timeout=180
    )
    return env


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_runportal_serves_and_stops_every_process_on_ctrl_c_or_sigterm(portal_env, stop_signal):
    # given runportal started in a session of its own, as a terminal would
    port = free_port()
    portal = subprocess.Popen(
        [sys.executable, "manage.py", "runportal", "--port", str(port)],
        cwd=REPO,
        env=portal_env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.extend(line.decode(errors="replace") for line in portal.stdout),
        daemon=True,
    )
    reader.start()
    try:
        # when the web server answers and the worker is ready
        deadline = time.monotonic() + 90
        answer = None
        while time.monotonic() < deadline and portal.poll() is None:
            answer = response_if_up(f"http://127.0.0.1:{port}/admin/login/")
            if answer is not None:
                break
            time.sleep(0.3)
        assert answer is not None and answer.status_code == 200
        assert b"Log in" in answer.content
        while time.monotonic() < deadline and not any("ready." in line for line in lines):
            time.sleep(0.3)
        assert any(line.startswith("worker |") and "ready." in line for line in lines), lines
        static = requests.get(f"http://127.0.0.1:{port}/static/admin/css/base.css", timeout=5)
        assert static.status_code == 200
        running = processes_in_session(portal.pid)
        assert any("uvicorn" in cmd for cmd in running)
        assert any("worker" in cmd for cmd in running)
        assert any("worker" in cmd and "--beat-thread" in cmd for cmd in running)
        assert any("worker" in cmd and "--tunnel-agent default" in cmd for cmd in running)
        assert not any("run_tunnel_agent" in cmd for cmd in running)
        agent_started = "Tunnel agent default started"
        while time.monotonic() < deadline and not any(agent_started in line for line in lines):
            time.sleep(0.3)
        assert any(agent_started in line for line in lines), lines
        # and runportal is sent Ctrl-C (SIGINT) or SIGTERM
        portal.send_signal(stop_signal)
        portal.wait(timeout=60)
        reader.join(timeout=10)
    finally:
        if portal.poll() is None:
            # A failed check: its parts have process groups of their own, in its session.
            for pid, _ in session_processes(portal.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            portal.wait()
    # then it exits cleanly and no process of its session is left
    assert portal.returncode == 0, "".join(lines)[-3000:]
    assert "runportal: stopped\n" in lines
    deadline = time.monotonic() + 5
    while processes_in_session(portal.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_in_session(portal.pid) == []


@pytest.fixture
def embedded_env():
    with embedded_default() as env:
        yield env


def test_runportal_restarts_a_crashed_part_with_back_off_and_keeps_serving(embedded_env):
    # given runportal on the embedded default (its private Redis among its processes)
    configure_instant_outpost(embedded_env)
    portal = RunningPortal(embedded_env)
    try:
        portal.wait_for_line("worker |", "ready.")
        assert any("redis-server" in cmd for _, cmd in session_processes(portal.process.pid))
        # when the worker is killed, twice in a row, and the broker once
        for crash in (1, 2):
            worker = portal.pid_of("-A portal worker")
            os.kill(worker, signal.SIGKILL)
            portal.wait_for_line("worker |", "ready.", count=1 + crash)
        broker = portal.pid_of("redis-server")
        os.kill(broker, signal.SIGKILL)
        portal.wait_for_line("runportal:", "restarting broker")
        # then each exit was a log line with a back-off that grew, and a restart
        exits = portal.lines_of("runportal:", "worker exited with code -9")
        assert "restarting it in 1 s (exit 1 in a row)" in exits[0], exits
        assert "restarting it in 2 s (exit 2 in a row)" in exits[1], exits
        assert portal.lines_of("runportal:", "broker exited with code -9")
        # and the portal still answers, its worker connected to the restarted broker
        wait_until(
            lambda: (
                (answer := response_if_up(f"http://127.0.0.1:{portal.port}/admin/login/"))
                and answer.status_code == 200
            ),
            timeout=30,
            what="the web server",
            details=portal.tail,
        )
        portal.wait_for_line("worker |", "Connected to redis+socket://", count=4)
        assert alive(portal.pid_of("redis-server"))
        # and a start goes through the restarted broker and worker
        status, answer = instant_start(hub_session(), f"http://127.0.0.1:{portal.port}", 1)
        assert (status, "127.0.0.1:9" in answer) == (200, True), (answer, portal.tail())
        running = session_processes(portal.process.pid)
    finally:
        portal.stop()
    # and Ctrl-C still stops everything, the broker included
    assert portal.process.returncode == 0, portal.tail()
    assert "runportal: stopped\n" in portal.lines
    assert len(running) >= 4  # runportal, broker, web, worker (and a web worker's children)
    wait_until(
        lambda: session_processes(portal.process.pid) == [],
        timeout=10,
        what="runportal's session to be empty",
        details=lambda: repr(session_processes(portal.process.pid)),
    )


@pytest.mark.django_db(transaction=True)
def test_beat_runs_on_a_fresh_checkout_with_database_and_broker_set(tmp_path):
    # given DATABASE_URL and CELERY_BROKER_URL set, and a data folder that does not exist yet
    env = portal_process_env(tmp_path)
    data = tmp_path / "fresh-checkout" / "var"
    env.update(PORTAL_DATA_DIR=str(data), PORTAL_RECONCILE_INTERVAL="1")
    # when runportal starts
    portal = RunningPortal(env)
    try:
        # then beat (a thread of the worker) sends the reconciler, again and again, and
        # nothing had to be restarted
        portal.wait_for_line("worker |", "Sending due task servers-reconcile", count=2)
        assert (data / "celerybeat-schedule.dat").exists() or (
            data / "celerybeat-schedule"
        ).exists()
        assert not portal.lines_of("runportal:", "exited")
        assert not any("redis-server" in cmd for _, cmd in session_processes(portal.process.pid))
    finally:
        portal.stop()
    assert portal.process.returncode == 0, portal.tail()
