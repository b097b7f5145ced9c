"""A real portal for the end-to-end tests with a real JupyterHub: uvicorn web and a Celery
worker as subprocesses on the pytest-django test database and the test broker.

It lives for a whole test module (a JupyterHub is configured with the portal's URL, and
starting both per test would make the suite slow), so it cannot use the function-scoped
``portal_web`` / ``celery_worker`` fixtures of tests/e2e/support.py; it starts the same
commands with the same environment (``portal_process_env``). The module's Outposts, flavors and Hub
are written with ``config_apply``, as ``make demo`` does, and the database is flushed when the
module ends, as pytest-django does after a transactional test.

The single-user servers run as children of the worker, in sessions of their own: stopping
the worker's process group does not reach them. Teardown therefore kills what is left of
the worker's descendants and reports it, so that a leak is visible but not inherited by the
next module.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from outposts.management.commands.runportal import web_command, worker_command
from tests.e2e.support import portal_process_env
from tests.support.processes import alive, descendants, free_port, stop_group, wait_until

VENV_BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
HUB_NAME = "e2e-hub"
#: Seconds between reconciler runs (beat): how soon the portal notices a server's exit.
RECONCILE_INTERVAL = 2


def local_outpost(
    slug: str,
    home: Path,
    *,
    spawner_class: str = "jupyterhub.spawner.SimpleLocalProcessSpawner",
    flavors: list[dict[str, Any]] | None = None,
    **spawner_config: Any,
) -> dict[str, Any]:
    """An Outpost (apply_config format) whose servers are real jupyterhub-singleuser processes."""
    return {
        "slug": slug,
        "name": f"Local processes ({slug})",
        "spawner_class": spawner_class,
        "spawner_config": {
            "cmd": [str(VENV_BIN / "jupyterhub-singleuser")],
            # The tests run as root; jupyter-server refuses root without it.
            "args": ["--allow-root"],
            # Where the Hub's proxy reaches it: this address is what the portal reports.
            "ip": "127.0.0.1",
            "home_dir_template": str(home / "{username}"),
            "interrupt_timeout": 3,
            "term_timeout": 3,
            "kill_timeout": 3,
            **spawner_config,
        },
        "poll_interval": 2,
        "start_timeout": 120,
        "flavors": flavors
        or [{"name": "small", "display_name": "Small", "description": "For trying", "weight": 10}],
    }


@dataclass
class LivePortal:
    """The running portal: base URL, the Hub's credentials, and a view of its database."""

    url: str
    hub_secret: str
    directory: Path
    db_access: Callable[[], Any]
    worker: subprocess.Popen[bytes]
    web: subprocess.Popen[bytes]
    beat: subprocess.Popen[bytes]
    hub_name: str = HUB_NAME
    hub_api_port: int | None = None
    server_pids: set[int] = field(default_factory=set)

    def outpost_url(self, slug: str) -> str:
        return f"{self.url}/outposts/{slug}/"

    def logs(self) -> str:
        parts = []
        for name in ("worker.log", "web.log", "beat.log"):
            path = self.directory / name
            text = path.read_text(errors="replace") if path.exists() else "(none)"
            parts.append(f"--- {name} (tail) ---\n" + "\n".join(text.splitlines()[-60:]))
        return "\n".join(parts)

    def servers(self, user_name: str, name: str | None = None) -> list[dict[str, Any]]:
        """The portal's Server rows of a Hub user, newest first, as dicts (history included)."""
        from outposts.models import Server

        with self.db_access():
            rows = Server.objects.filter(user_name=user_name).order_by("-pk")
            if name is not None:
                rows = rows.filter(name=name)
            return [
                {
                    "id": row.pk,
                    "name": row.name,
                    "start_id": row.start_id,
                    "status": row.status,
                    "address": row.address,
                    "flavor": row.flavor.name if row.flavor else None,
                    "state": row.spawner_state or {},
                    "removed": row.removed_at is not None,
                    "error": row.error,
                    "events": [event.message for event in row.events.order_by("pk")],
                }
                for row in rows.select_related("flavor")
            ]

    def server(self, user_name: str, name: str = "") -> dict[str, Any]:
        rows = self.servers(user_name, name)
        assert rows, f"the portal has no server {user_name!r}/{name!r}\n{self.logs()}"
        return rows[0]

    def remember_server_processes(self) -> set[int]:
        """The worker's descendants now (single-user servers leave its process group)."""
        self.server_pids |= descendants(self.worker.pid)
        return self.server_pids


@contextmanager
def running_portal(
    directory: Path,
    *,
    django_db_blocker: Any,
    outposts: list[dict[str, Any]],
    hub_name: str = HUB_NAME,
    hub_api_port: int | None = None,
) -> Iterator[LivePortal]:
    """Configure the test database (Outposts, flavors, one Hub) and run web, worker and beat.

    ``hub_api_port``: where the test's JupyterHub will serve its API; the portal may call
    back (progress events, set-up tunnel, flavor updates) only under that Hub's API URL.
    """
    from django.core.management import call_command

    from outposts.provisioning import config_apply

    directory.mkdir(parents=True, exist_ok=True)
    hub_secret = secrets.token_urlsafe(24)
    with django_db_blocker.unblock():
        config_apply(
            data={
                "outposts": outposts,
                "hubs": [
                    {
                        "name": hub_name,
                        "secret": hub_secret,
                        "outposts": [outpost["slug"] for outpost in outposts],
                        "callback_url_prefixes": (
                            [f"http://127.0.0.1:{hub_api_port}/hub/api/"] if hub_api_port else []
                        ),
                    }
                ],
            }
        )
        env = portal_process_env(directory)
    # Beat runs the reconciler this often: a server that exits is noticed within seconds.
    env["PORTAL_RECONCILE_INTERVAL"] = str(RECONCILE_INTERVAL)
    Path(env["PORTAL_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
    queues = ["celery", *(f"outpost.{outpost['slug']}" for outpost in outposts)]
    port = free_port()
    commands = {
        "worker": [
            *worker_command(queues),
            "--without-heartbeat",
            "--purge",
            "--hostname",
            f"hubclient-e2e-{uuid.uuid4().hex[:8]}@%h",
        ],
        # The web server as runportal (the demo) runs it: the admin with its static files.
        "web": [*web_command("127.0.0.1", port, serve_static=True), "--log-level", "warning"],
        "beat": [str(VENV_BIN / "celery"), "-A", "portal", "beat", "--loglevel", "INFO"],
    }
    started: dict[str, subprocess.Popen[bytes]] = {}
    server_pids: set[int] = set()
    # Everything from the first process on is inside the try: a failure while starting the
    # others (or waiting for them) must not leak the ones already running.
    try:
        for name, command in commands.items():
            with (directory / f"{name}.log").open("wb") as log:
                started[name] = subprocess.Popen(
                    command,
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )

        @contextmanager
        def db_access() -> Iterator[None]:
            with django_db_blocker.unblock():
                yield

        portal = LivePortal(
            url=f"http://127.0.0.1:{port}",
            hub_secret=hub_secret,
            directory=directory,
            db_access=db_access,
            worker=started["worker"],
            web=started["web"],
            beat=started["beat"],
            hub_name=hub_name,
            hub_api_port=hub_api_port,
            server_pids=server_pids,
        )

        def web_up() -> bool:
            assert portal.web.poll() is None, f"uvicorn exited\n{portal.logs()}"
            try:
                return requests.get(f"{portal.url}/outposts/x/ping", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        def worker_up() -> bool:
            assert portal.worker.poll() is None, f"the Celery worker exited\n{portal.logs()}"
            return "ready." in (directory / "worker.log").read_text(errors="replace")

        wait_until(web_up, timeout=30, what="the portal's web server", details=portal.logs)
        wait_until(worker_up, timeout=60, what="the portal's Celery worker", details=portal.logs)
        yield portal
    finally:
        if "worker" in started:
            server_pids |= descendants(started["worker"].pid)
        for name in ("beat", "web", "worker"):
            if name in started:
                stop_group(started[name])
        left = {pid for pid in server_pids if alive(pid)}
        for pid in left:
            os.kill(pid, 9)
        with django_db_blocker.unblock():
            # What pytest-django does after a transactional test: the next test starts empty.
            call_command("flush", interactive=False, verbosity=0)
        if left:
            print(f"portal left server processes behind, killed: {sorted(left)}")  # noqa: T201
