"""What the portal's Outposts run in tests: a stand-in single-user server, spawner traits
for it and for the real jupyterhub-singleuser, and stand-in spawner classes.

- ``SERVE_SCRIPT``: a tiny HTTP server that listens where JUPYTERHUB_SERVICE_URL says and
  answers under its path only, as jupyterhub-singleuser does; ``<prefix>exit-<n>`` makes it
  exit with status n.
- ``serve_config`` / ``singleuser_config``: spawner traits that run one or the other.
- Spawner classes that tests configure on Outposts by dotted path
  (``"tests.support.spawners.SlowSpawner"``): the portal's Celery workers import them too,
  as they run from the repository root. No Django here.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from jupyterhub.spawner import SimpleLocalProcessSpawner
from traitlets import Float

VENV_BIN = Path(sys.executable).parent

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


# --- Spawner classes, configured on Outposts by dotted path ---------------------------------


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


class QueuedStartSpawner(SimpleLocalProcessSpawner):
    """A start that stays pending, like a batch job waiting in a queue.

    The server process is started at once (so a cancelled start has something to clean
    up), its pid written to ``<home>/started.pid``, and only after ``start_delay`` seconds
    does start() return.
    """

    start_delay = Float(60.0, help="Seconds start() takes after the process runs.").tag(config=True)

    async def start(self):  # type: ignore[override]
        result = await super().start()
        Path(self.home_dir, "started.pid").write_text(str(self.pid))
        await asyncio.sleep(self.start_delay)
        return result


class InstantSpawner(SimpleLocalProcessSpawner):
    """Starts no process: answers an address at once, runs until stopped, stops at once.

    For tests that push many starts through the real path (API, admission, task, runner),
    such as fuzzing the schema, where a process per server would be the cost, not the subject.
    """

    async def start(self):
        return ("127.0.0.1", 9)

    async def poll(self):
        return None

    async def stop(self, now=False):
        return None
