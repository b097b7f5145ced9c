"""runportal runs web, worker, beat and the tunnel agent in the foreground and leaves nothing
behind."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.support.processes import free_port, response_if_up

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.e2e


def processes_in_session(sid: int) -> list[str]:
    """Command lines of the live (not zombie) processes whose session id is ``sid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        # Fields after the parenthesised command: state ppid pgrp session ...
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(cmdline)
    return found


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
        assert any("beat" in cmd for cmd in running)
        assert any("run_tunnel_agent" in cmd for cmd in running)
        # and runportal is sent Ctrl-C (SIGINT) or SIGTERM
        portal.send_signal(stop_signal)
        portal.wait(timeout=60)
        reader.join(timeout=10)
    finally:
        if portal.poll() is None:
            os.killpg(portal.pid, signal.SIGKILL)
            portal.wait()
    # then it exits cleanly and no process of its session is left
    assert portal.returncode == 0, "".join(lines)[-3000:]
    assert "runportal: stopped\n" in lines
    deadline = time.monotonic() + 5
    while processes_in_session(portal.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_in_session(portal.pid) == []
