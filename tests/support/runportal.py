"""``manage.py runportal`` as a terminal runs it, for tests of the launcher and of the
embedded default (SQLite and the private Redis in a data folder of its own). No Django here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tests.support.processes import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
HUB_NAME, HUB_SECRET = "load-hub", "load-hub-secret-for-tests"
# Test keys (tests/settings.py's): the embedded default runs with debug off, as the demo does.
TEST_SECRETS = {
    "PORTAL_SECRET_KEY": "tests-only-secret-key",
    "PORTAL_CREDENTIAL_KEY": "tests-only-credential-key",
    "PORTAL_ENCRYPTION_KEYS": "doMMAYSpy4vTWjE1IhxV6yhXTVFnlisU_zoKssC77Q0=",
    "PORTAL_SECURE_COOKIES": "false",
}


@contextmanager
def embedded_default() -> Iterator[dict[str, str]]:
    """The env of a fresh checkout's portal: neither DATABASE_URL nor CELERY_BROKER_URL, a
    migrated SQLite database in a data folder of its own (short: it holds the broker's unix
    socket, at most 107 bytes), removed afterwards."""
    data = Path(tempfile.mkdtemp(prefix="rp-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "CELERY_"))}
    env.pop("PORTAL_DEBUG", None)
    env.update(TEST_SECRETS, DJANGO_SETTINGS_MODULE="portal.settings", PORTAL_DATA_DIR=str(data))
    try:
        manage(env, "migrate", "-v0")
        yield env
    finally:
        subprocess.run(["rm", "-rf", str(data)], check=False)


def manage(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, timeout=300)


class RunningPortal:
    """``manage.py runportal`` in a session of its own, as a terminal runs it, and its lines."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "runportal", "--port", str(self.port)],
            cwd=ROOT,
            env=env,
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(
            target=lambda: self.lines.extend(
                line.decode(errors="replace") for line in self.process.stdout
            ),
            daemon=True,
        )
        self.reader.start()

    def tail(self) -> str:
        return "".join(self.lines[-80:])

    def lines_of(self, part: str, text: str) -> list[str]:
        return [line for line in list(self.lines) if line.startswith(part) and text in line]

    def wait_for_line(self, part: str, text: str, *, count: int = 1, timeout: float = 90) -> None:
        def seen() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"runportal exited\n{self.tail()}")
            return len(self.lines_of(part, text)) >= count

        wait_until(seen, timeout=timeout, what=f"{count} x {part!r} {text!r}", details=self.tail)

    def pid_of(self, needle: str) -> int:
        """The pid of the one process of runportal's session whose command line (or the title
        Celery gives itself) has ``needle``."""
        found = [pid for pid, cmd in session_processes(self.process.pid) if needle in cmd]
        assert len(found) == 1, found
        return found[0]

    def stop(self) -> None:
        """Ctrl-C, as a terminal sends it; kills the session if it does not stop."""
        try:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(timeout=60)
            self.reader.join(timeout=10)
        finally:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def session_processes(sid: int) -> list[tuple[int, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append((int(entry.name), cmdline))
    return found


# --- An Outpost of instant servers, and starts through the API -------------------------------


def configure_instant_outpost(env: dict[str, str]) -> None:
    """Apply an Outpost ``load`` of InstantSpawner servers and a Hub that may use it, before
    runportal runs the broker, as scripts/demo does (the flavor push apply_config queues has
    no Hub to reach: an in-process broker takes it)."""
    config = {
        "outposts": [
            {
                "slug": "load",
                "default": True,
                "spawner_class": "tests.support.spawners.InstantSpawner",
                "spawner_config": {},
                "flavors": [{"name": "small", "display_name": "Small"}],
            }
        ],
        "hubs": [{"name": HUB_NAME, "secret": HUB_SECRET, "outposts": ["load"]}],
    }
    path = Path(env["PORTAL_DATA_DIR"]) / "instant.yaml"
    path.write_text(json.dumps(config))  # YAML reads JSON
    # The portal's settings, not the tests': the stand-in spawner is allow-listed as a site's
    # operators would allow-list theirs.
    allowed = {"PORTAL_SPAWNER_CLASSES": "tests.support.spawners.InstantSpawner"}
    manage({**env, **allowed, "CELERY_BROKER_URL": "memory://"}, "apply_config", str(path))


def instant_start(session: requests.Session, base: str, number: int) -> tuple[int, str]:
    """A synchronous start of server ``s<number>`` of its own user; (status, body)."""
    body = {
        "name": "",
        "env": {"JUPYTERHUB_USER": f"user{number}", "JUPYTERHUB_USER_ID": str(1000 + number)},
        "user_options": {"start_id": f"s{number}", "flavor": "small"},
    }
    try:
        answer = session.post(f"{base}/outposts/load/services", json=body, timeout=120)
    except requests.RequestException as exc:
        return 0, repr(exc)
    return answer.status_code, answer.text


def hub_session() -> requests.Session:
    client = requests.Session()
    client.auth = (HUB_NAME, HUB_SECRET)
    return client
