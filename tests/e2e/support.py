"""Real components for the runner, task and end-to-end tests.

- ``SERVE_SCRIPT``: a tiny HTTP server that listens where JUPYTERHUB_SERVICE_URL says and
  answers under its path only, as jupyterhub-singleuser does; ``<prefix>exit-<n>`` makes it
  exit with status n.
- ``FakeHub``: a real HTTP server standing in for a JupyterHub's API: it answers the version
  check of jupyterhub-singleuser and records progress events, set-up-tunnel calls and flavor
  updates.
- ``celery_worker`` / ``portal_web``: a real Celery worker and a real uvicorn, as
  subprocesses on the pytest-django test database and the test broker.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from outposts.management.commands.runportal import worker_command
from tests.support.processes import free_port, stop_group, wait_until

VENV_BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]

SERVE_SCRIPT = r"""
import json, os, signal, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

url = urlsplit(os.environ["JUPYTERHUB_SERVICE_URL"])
prefix = url.path

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if not self.path.startswith(prefix):
            self.send_response(404)
            self.end_headers()
            return
        tail = self.path[len(prefix):]
        body = json.dumps({
            "user": os.environ.get("JUPYTERHUB_USER"),
            "path": self.path,
            "cwd": os.getcwd(),
            "env": dict(os.environ),
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if tail.startswith("exit-"):
            threading.Timer(0.2, os._exit, args=(int(tail[5:]),)).start()

    def log_message(self, *args):
        pass

signal.signal(signal.SIGINT, lambda *a: sys.exit(0))
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
ThreadingHTTPServer((url.hostname or "", url.port), Handler).serve_forever()
"""


def serve_config(home: Path, **extra: Any) -> dict[str, Any]:
    """Spawner traits that run SERVE_SCRIPT on 127.0.0.1 with short stop timeouts."""
    return {
        "cmd": [sys.executable, "-c", SERVE_SCRIPT],
        "ip": "127.0.0.1",
        "home_dir_template": str(home / "{username}"),
        "interrupt_timeout": 3,
        "term_timeout": 3,
        "kill_timeout": 3,
        **extra,
    }


def singleuser_config(home: Path, **extra: Any) -> dict[str, Any]:
    """Spawner traits that run the real jupyterhub-singleuser (as root it needs --allow-root)."""
    return {
        "cmd": [str(VENV_BIN / "jupyterhub-singleuser"), "--allow-root"],
        "ip": "127.0.0.1",
        "home_dir_template": str(home / "{username}"),
        "interrupt_timeout": 5,
        "term_timeout": 5,
        "kill_timeout": 5,
        **extra,
    }


def json_if_up(url: str) -> Any:
    """The JSON a server answers at ``url``, or None while it is not (yet) answering 200."""
    try:
        response = requests.get(url, timeout=2)
    except requests.ConnectionError:
        return None
    return response.json() if response.status_code == 200 else None


def get_json(url: str, **kwargs: Any) -> Any:
    response = requests.get(url, timeout=5, **kwargs)
    response.raise_for_status()
    return response.json()


@dataclass
class HubCall:
    method: str
    path: str
    authorization: str
    body: Any


class FakeHub:
    """A real HTTP server on 127.0.0.1 in a thread, standing in for a JupyterHub's API."""

    def __init__(self) -> None:
        self.calls: list[HubCall] = []
        self.status_for: dict[str, int] = {}  # path prefix -> answer status of a POST
        self.redirect_for: dict[str, str] = {}  # path prefix -> Location of a 307 answer
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                # jupyterhub-singleuser checks its Hub's version before it serves.
                self._answer(200, {"version": "6.1.1"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                hub.calls.append(
                    HubCall(
                        method="POST",
                        path=self.path,
                        authorization=self.headers.get("Authorization", ""),
                        body=json.loads(raw) if raw else None,
                    )
                )
                location = next(
                    (u for p, u in hub.redirect_for.items() if self.path.startswith(p)), None
                )
                if location is not None:
                    self.send_response(307)
                    self.send_header("Location", location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = next(
                    (s for p, s in hub.status_for.items() if self.path.startswith(p)), 204
                )
                self._answer(status, None)

            def _answer(self, status: int, body: Any) -> None:
                self.send_response(status)
                self.send_header("X-JupyterHub-Version", "6.1.1")
                if body is None:
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = json.dumps(body).encode()
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def env(self, user: str, server_name: str = "", *, token: str = "server-token") -> dict:
        """The env a stock Hub sends for ``user``'s server, pointing at this fake Hub."""
        api = f"{self.url}/hub/api"
        suffix = f"/{server_name}" if server_name else ""
        prefix = f"/user/{user}/{server_name + '/' if server_name else ''}"
        return {
            "JUPYTERHUB_API_TOKEN": token,
            "JUPYTERHUB_CLIENT_ID": f"jupyterhub-user-{user}",
            "JUPYTERHUB_USER": user,
            "JUPYTERHUB_USER_ID": "7",
            "JUPYTERHUB_SERVER_NAME": server_name,
            "JUPYTERHUB_API_URL": api,
            "JUPYTERHUB_BASE_URL": "/",
            "JUPYTERHUB_HOST": "",
            "JUPYTERHUB_SERVICE_PREFIX": prefix,
            # The stock Hub's own port choice: the portal rewrites host and port.
            "JUPYTERHUB_SERVICE_URL": f"http://0.0.0.0:51285{prefix}",
            "JUPYTERHUB_EVENTS_URL": f"{api}/users/progress/events/{user}{suffix}",
            "JUPYTERHUB_SETUPTUNNEL_URL": f"{api}/users/setuptunnel/{user}{suffix}",
            "JUPYTERHUB_FLAVORS_UPDATE_URL": f"{api}/outpostflavors/local",
            "JUPYTERHUB_FLAVORS_UPDATE_TOKEN": "flavors-token",
        }

    def posts(self, fragment: str) -> list[HubCall]:
        return [call for call in list(self.calls) if fragment in call.path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_hub() -> Iterator[FakeHub]:
    hub = FakeHub()
    yield hub
    hub.close()


def portal_process_env(tmp_path: Path) -> dict[str, str]:
    """Env of a subprocess on the same test database and broker as this test."""
    from django.conf import settings
    from django.db import connection

    db = connection.settings_dict
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        DATABASE_URL=(
            f"postgres://{user}{password}@{db.get('HOST') or '127.0.0.1'}:"
            f"{db.get('PORT') or 5432}/{db['NAME']}"
        ),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        PORTAL_DATA_DIR=str(tmp_path / "portal-data"),
        PORTAL_SERVER_CERTS_DIR=str(settings.SERVER_CERTS_DIR),
        PYTHONUNBUFFERED="1",
    )
    return env


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log_path: Path
    queues: list[str]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def celery_worker(transactional_db: None, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start a real ``celery -A portal worker`` subprocess on the given queues.

    It uses the pytest-django test database (its name read from the connection) and the test
    broker; the queues are purged first so no other run's messages reach it. At teardown the
    worker's whole process group is stopped and checked gone.
    """
    workers: list[Worker] = []

    def start(*queues: str) -> Worker:
        log_path = tmp_path / f"worker-{len(workers)}.log"
        # The production command line (runportal's), plus what a test run needs: a clean
        # queue and a name of its own.
        cmd = [
            *worker_command(["celery", *queues]),
            "--without-heartbeat",
            "--purge",
            "--hostname",
            f"e2e-{uuid.uuid4().hex[:8]}@%h",
        ]
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=portal_process_env(tmp_path),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = Worker(proc=proc, log_path=log_path, queues=["celery", *queues])
        workers.append(worker)
        try:
            wait_until(lambda: "ready." in worker.log() or proc.poll() is not None, timeout=60)
        except AssertionError:
            raise AssertionError(f"worker did not start:\n{worker.log()}") from None
        assert proc.poll() is None, f"worker exited:\n{worker.log()}"
        return worker

    yield start
    for worker in workers:
        stop_group(worker.proc)
        assert worker.proc.poll() is not None
        with pytest.raises(ProcessLookupError):
            os.killpg(worker.proc.pid, 0)


@pytest.fixture
def portal_web(transactional_db: None, tmp_path: Path) -> Iterator[str]:
    """The portal served by a real uvicorn on portal.asgi, as in production; its base URL."""
    port = free_port()
    log_path = tmp_path / "web.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                str(VENV_BIN / "uvicorn"),
                "portal.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=portal_process_env(tmp_path),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"uvicorn exited:\n{log_path.read_text()}")
        try:
            return requests.get(f"{base}/outposts/x/ping", timeout=1).status_code < 500
        except requests.ConnectionError:
            return False

    wait_until(up, timeout=30)
    yield base
    stop_group(proc)


# Spawner classes for tests, importable by dotted path (workers load them too).

from jupyterhub.spawner import SimpleLocalProcessSpawner  # noqa: E402


class SlowSpawner(SimpleLocalProcessSpawner):
    """Starts the server, writes its pid to <home>/spawned.pid, then takes 60 s to return."""

    async def start(self):
        result = await super().start()
        Path(self.home_dir, "spawned.pid").write_text(str(self.pid))
        await asyncio.sleep(60)
        return result


class HangingSpawner(SimpleLocalProcessSpawner):
    """A start that never returns (a batch job that never leaves the queue)."""

    async def start(self):
        await asyncio.Event().wait()


class UnreachableSpawner(SimpleLocalProcessSpawner):
    """A system that cannot be asked: every poll raises, until <home>/reachable exists."""

    async def poll(self):
        if Path(self.home_dir, "reachable").exists():
            return None
        raise ConnectionError("the system does not answer")

    async def stop(self, now=False):
        return None
