"""``manage.py runportal``: the web server, a Celery worker (with Celery beat in a thread of
it, portal/beat.py) and a tunnel agent in one foreground command, for the demo and
development; with CELERY_BROKER_URL unset, also the embedded default's private Redis
(portal/embedded_broker.py), started first and stopped last.

A child that exits by itself is restarted with back-off and a log line (portal/supervisor.py);
Ctrl-C (SIGINT) or SIGTERM stops them all. In production run the parts separately (README.md,
"Running in production"; docs/tunnels.md for the agent).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from portal import supervisor
from portal.embedded_broker import (
    EmbeddedBrokerUnavailable,
    broker_answers,
    redis_server_command,
)
from portal.supervisor import PLAN_VARIABLE, Plan


def worker_queues() -> list[str]:
    """The default queue plus every Outpost's own queue."""
    # Imported here: uvicorn imports this module (asgi_with_static_files) before Django's setup.
    from outposts.models import Outpost

    queues = [settings.CELERY_TASK_DEFAULT_QUEUE]
    for outpost in Outpost.objects.all():
        if outpost.celery_queue not in queues:
            queues.append(outpost.celery_queue)
    return queues


def worker_command(
    queues: list[str], *, with_beat: bool = False, tunnel_agent: str | None = None
) -> list[str]:
    """The Celery worker command line, the same one README.md gives for production;
    ``with_beat`` also runs beat in a thread of the worker (portal/beat.py), and
    ``tunnel_agent`` the tunnel agent of that name (tunnels/agent_thread.py), as runportal
    does to save their own processes."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "portal",
        "worker",
        "--queues",
        ",".join(queues),
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
        *(["--beat-thread"] if with_beat else []),
        *(["--tunnel-agent", tunnel_agent] if tunnel_agent else []),
    ]


def beat_command() -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "portal", "beat", "--loglevel", "INFO"]


def web_command(host: str, port: int, *, serve_static: bool) -> list[str]:
    app = (
        ["--factory", "outposts.management.commands.runportal:asgi_with_static_files"]
        if serve_static
        else ["portal.asgi:application"]
    )
    # The same protocol and loop as README.md's production command (portal/webserver.py).
    http = ["--http", "portal.webserver:HttpProtocol", "--loop", "uvloop"]
    return [sys.executable, "-m", "uvicorn", *app, *http, "--host", host, "--port", str(port)]


def asgi_with_static_files() -> Any:
    """The ASGI application that also serves the admin's static files, as runserver does.

    For the all-in-one launcher only; production serves collected static files from its
    reverse proxy.
    """
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    from portal.asgi import application  # the router: the Hub API's lean stack too

    return ASGIStaticFilesHandler(application)


class Command(BaseCommand):
    help = (
        "Run the web server and a Celery worker (all queues, with beat and the tunnel agent "
        "named default in threads) until stopped (and the private Redis when "
        "CELERY_BROKER_URL is unset); a part that exits is restarted."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--no-static", action="store_true", help="do not serve the admin's static files"
        )

    def handle(self, *args: Any, host: str, port: int, no_static: bool, **options: Any) -> None:
        broker_command = embedded_broker_command() if settings.EMBEDDED_BROKER else None
        queues = worker_queues()
        plan = Plan(
            parts={
                "web": web_command(host, port, serve_static=not no_static),
                # Beat and the tunnel agent in worker threads: each as its own process cost
                # 80-90 MiB idle (bench/README.md).
                "worker": worker_command(queues, with_beat=True, tunnel_agent="default"),
            },
            broker=broker_command,
            broker_socket=str(settings.EMBEDDED_BROKER_SOCKET) if broker_command else None,
        )
        self.stdout.write(f"runportal: web on http://{host}:{port}/, worker queues {queues}")
        self.stdout.flush()
        # The supervising process needs no Django: it becomes portal/supervisor.py (run as a
        # script: standard library only), with the same pid (signals, a terminal's Ctrl-C)
        # and the same output.
        connections.close_all()
        os.environ[PLAN_VARIABLE] = plan.to_json()
        script = str(Path(supervisor.__file__))
        os.execv(sys.executable, [sys.executable, script])  # noqa: S606


def embedded_broker_command() -> list[str]:
    """The private Redis's command line; refuses when one already answers on its socket
    (another runportal on this PORTAL_DATA_DIR would lose its broker to this one)."""
    socket = settings.EMBEDDED_BROKER_SOCKET
    if broker_answers(socket):
        raise CommandError(
            f"A broker already answers on {socket}: another runportal runs on this "
            "PORTAL_DATA_DIR. Stop it, or give this one a PORTAL_DATA_DIR of its own."
        )
    settings.EMBEDDED_BROKER_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        return redis_server_command(folder=settings.EMBEDDED_BROKER_DIR, socket=socket)
    except EmbeddedBrokerUnavailable as exc:
        raise CommandError(str(exc)) from None
