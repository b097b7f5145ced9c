"""The real portal for end-to-end tests: its web server (uvicorn), Celery workers and beat as
subprocesses on the pytest-django test database and the test broker.

Starting and stopping them is written once, here (``start_portal_process``,
``wait_for_web``, ``wait_for_worker``, ``stop_portal_processes``), for two callers:

- the function-scoped fixtures ``portal_web`` and ``celery_worker`` (tests/e2e/), on the
  test's own transactional database;
- ``running_portal``, a portal with web, worker and beat that lives for a whole test module
  (a JupyterHub is configured with the portal's URL, and starting both per test would make
  the suite slow). Its Outposts, flavors and Hub are written with ``config_apply``, as
  ``make demo`` does, and the database is flushed when the module ends, as pytest-django
  does after a transactional test.

The single-user servers run as children of a worker, in sessions of their own: stopping the
worker's process group does not reach them. Teardown therefore kills what is left of the
processes' descendants and reports it, so that a leak is visible but not inherited by the
next test or module.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from outposts.management.commands.runportal import beat_command, web_command, worker_command
from tests.support.processes import (
    alive,
    descendants,
    free_port,
    response_if_up,
    stop_group,
    wait_until,
)
from tests.support.spawners import VENV_BIN

ROOT = Path(__file__).resolve().parents[2]
HUB_NAME = "e2e-hub"
#: Seconds between reconciler runs (beat): how soon the portal notices a server's exit.
RECONCILE_INTERVAL = 2


# --- The portal's processes ------------------------------------------------------------------


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


def e2e_worker_command(queues: list[str], name: str) -> list[str]:
    """The production worker command line (runportal's), plus what a test run needs: a clean
    queue and a name of its own."""
    return [
        *worker_command(queues),
        "--without-heartbeat",
        "--purge",
        "--hostname",
        f"{name}-{uuid.uuid4().hex[:8]}@%h",
    ]


@dataclass
class PortalProcess:
    """One process of the portal (web, worker or beat), in a session of its own, and its log."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    #: Processes seen below it (single-user servers leave its process group).
    descendants: set[int] = field(default_factory=set)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        text = self.log() or "(none)"
        return f"--- {self.log_path.name} (tail) ---\n" + "\n".join(text.splitlines()[-lines:])

    def remember_descendants(self) -> set[int]:
        self.descendants |= descendants(self.proc.pid)
        return self.descendants


@dataclass
class Worker(PortalProcess):
    """A Celery worker and the queues it serves."""

    queues: list[str] = field(default_factory=list)


def start_portal_process(
    name: str,
    command: list[str],
    *,
    directory: Path,
    env: dict[str, str],
    kind: type[PortalProcess] = PortalProcess,
    **fields: Any,
) -> PortalProcess:
    """Start ``command`` from the repository root in a session of its own, logging to
    ``directory/<name>.log``; it is not waited for (see ``wait_for_*``). ``kind`` and
    ``fields``: a subclass to return, such as ``Worker`` with its ``queues``."""
    log_path = directory / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return kind(name=name, proc=proc, log_path=log_path, **fields)


def wait_for_web(
    web: PortalProcess, url: str, *, timeout: float = 30, details: Callable[[], str] | None = None
) -> None:
    """Wait until the portal at ``url`` answers its ping; fails if the web server exits."""
    details = details or web.log_tail

    def up() -> bool:
        if web.proc.poll() is not None:
            pytest.fail(f"uvicorn exited\n{details()}")
        answer = response_if_up(f"{url}/outposts/x/ping")
        return answer is not None and answer.status_code == 200

    wait_until(up, timeout=timeout, what="the portal's web server", details=details)


def wait_for_worker(
    worker: PortalProcess, *, timeout: float = 60, details: Callable[[], str] | None = None
) -> None:
    """Wait until the Celery worker says it is ready; fails if it exits."""
    details = details or worker.log_tail

    def ready() -> bool:
        if worker.proc.poll() is not None:
            pytest.fail(f"the Celery worker exited\n{details()}")
        return "ready." in worker.log()

    wait_until(ready, timeout=timeout, what="the portal's Celery worker", details=details)


def stop_portal_processes(processes: list[PortalProcess]) -> set[int]:
    """Stop the processes' groups, in this order; kill their descendants left behind (servers
    in sessions of their own), report them and return their pids; then check every group gone.
    """
    for process in processes:
        if process.proc.poll() is None:
            process.remember_descendants()
    for process in processes:
        stop_group(process.proc)
    left = {pid for process in processes for pid in process.descendants if alive(pid)}
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if left:
        print(f"portal left server processes behind, killed: {sorted(left)}")  # noqa: T201
    wait_until(
        lambda: not [process for process in processes if _group_exists(process.proc.pid)],
        timeout=10,
        what="the portal's process groups to be gone",
        details=lambda: ", ".join(p.name for p in processes if _group_exists(p.proc.pid)),
    )
    return left


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


# --- Function-scoped fixtures (registered by tests/e2e/conftest.py) --------------------------


@pytest.fixture
def celery_worker(transactional_db: None, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start a real ``celery -A portal worker`` subprocess on the given queues.

    It uses the pytest-django test database (its name read from the connection) and the test
    broker; the queues are purged first so no other run's messages reach it. At teardown the
    worker's whole process group is stopped and checked gone.
    """
    workers: list[Worker] = []

    def start(*queues: str) -> Worker:
        worker = start_portal_process(
            f"worker-{len(workers)}",
            e2e_worker_command(["celery", *queues], "e2e"),
            directory=tmp_path,
            env=portal_process_env(tmp_path),
            kind=Worker,
            queues=["celery", *queues],
        )
        assert isinstance(worker, Worker)
        workers.append(worker)
        wait_for_worker(worker)
        return worker

    yield start
    stop_portal_processes(list(workers))


@contextmanager
def web_process(directory: Path, *, serve_static: bool = False) -> Iterator[str]:
    """The portal served by a real uvicorn on portal.asgi, as in production; its base URL.
    ``serve_static``: also the admin's static files, for a browser."""
    port = free_port()
    web = start_portal_process(
        "web",
        [*web_command("127.0.0.1", port, serve_static=serve_static), "--log-level", "warning"],
        directory=directory,
        env=portal_process_env(directory),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_web(web, base)
        yield base
    finally:
        stop_portal_processes([web])


@pytest.fixture
def portal_web(transactional_db: None, tmp_path: Path) -> Iterator[str]:
    """The portal's web server on the test's database; its base URL."""
    with web_process(tmp_path) as base:
        yield base


# --- A portal for a whole test module --------------------------------------------------------


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
    processes: dict[str, PortalProcess]
    hub_name: str = HUB_NAME
    hub_api_port: int | None = None

    @property
    def worker(self) -> subprocess.Popen[bytes]:
        return self.processes["worker"].proc

    @property
    def web(self) -> subprocess.Popen[bytes]:
        return self.processes["web"].proc

    @property
    def beat(self) -> subprocess.Popen[bytes]:
        return self.processes["beat"].proc

    def outpost_url(self, slug: str) -> str:
        return f"{self.url}/outposts/{slug}/"

    def logs(self) -> str:
        return "\n".join(self.processes[name].log_tail() for name in ("worker", "web", "beat"))

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
        return self.processes["worker"].remember_descendants()


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
        "worker": e2e_worker_command(queues, "hubclient-e2e"),
        # The web server as runportal (the demo) runs it: the admin with its static files.
        "web": [*web_command("127.0.0.1", port, serve_static=True), "--log-level", "warning"],
        "beat": beat_command(),
    }
    started: dict[str, PortalProcess] = {}
    # Everything from the first process on is inside the try: a failure while starting the
    # others (or waiting for them) must not leak the ones already running.
    try:
        for name, command in commands.items():
            started[name] = start_portal_process(name, command, directory=directory, env=env)

        @contextmanager
        def db_access() -> Iterator[None]:
            with django_db_blocker.unblock():
                yield

        portal = LivePortal(
            url=f"http://127.0.0.1:{port}",
            hub_secret=hub_secret,
            directory=directory,
            db_access=db_access,
            processes=started,
            hub_name=hub_name,
            hub_api_port=hub_api_port,
        )
        wait_for_web(started["web"], portal.url, details=portal.logs)
        wait_for_worker(started["worker"], details=portal.logs)
        yield portal
    finally:
        try:
            stop_portal_processes(
                [started[name] for name in ("beat", "web", "worker") if name in started]
            )
        finally:
            with django_db_blocker.unblock():
                # What pytest-django does after a transactional test: the next test starts
                # empty.
                call_command("flush", interactive=False, verbosity=0)
