"""``manage.py runportal``: the web server, a Celery worker, Celery beat and a tunnel agent in
one foreground command, for the demo and development.

Each child runs in its own process group, so that a terminal's Ctrl-C reaches only this
command, which then stops the children in order; killing each whole group at the end also
ends whatever a child started and left behind. In production run the three parts separately
(README.md, "Running in production"; docs/tunnels.md for the agent).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

# How long the children get to finish after SIGTERM (a warm Celery shutdown waits for its
# running tasks; with acks_late an unfinished one is redelivered) before they are killed.
STOP_GRACE_SECONDS = 15.0


def worker_queues() -> list[str]:
    """The default queue plus every Outpost's own queue."""
    # Imported here: uvicorn imports this module (asgi_with_static_files) before Django's setup.
    from outposts.models import Outpost

    queues = [settings.CELERY_TASK_DEFAULT_QUEUE]
    for outpost in Outpost.objects.all():
        if outpost.celery_queue not in queues:
            queues.append(outpost.celery_queue)
    return queues


def worker_command(queues: list[str]) -> list[str]:
    """The Celery worker command line, the same one README.md gives for production."""
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
    ]


def beat_command() -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "portal", "beat", "--loglevel", "INFO"]


def tunnel_agent_command(name: str = "default") -> list[str]:
    """The tunnel agent's command line (docs/tunnels.md)."""
    manage = str(settings.BASE_DIR / "manage.py")
    return [sys.executable, manage, "run_tunnel_agent", "--name", name]


def web_command(host: str, port: int, *, serve_static: bool) -> list[str]:
    app = (
        ["--factory", "outposts.management.commands.runportal:asgi_with_static_files"]
        if serve_static
        else ["portal.asgi:application"]
    )
    return [sys.executable, "-m", "uvicorn", *app, "--host", host, "--port", str(port)]


def asgi_with_static_files() -> Any:
    """The ASGI application that also serves the admin's static files, as runserver does.

    For the all-in-one launcher only; production serves collected static files from its
    reverse proxy.
    """
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
    from django.core.asgi import get_asgi_application

    return ASGIStaticFilesHandler(get_asgi_application())


class Command(BaseCommand):
    help = (
        "Run the web server, a Celery worker (all queues), Celery beat and the tunnel agent "
        "named default until stopped."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--no-static", action="store_true", help="do not serve the admin's static files"
        )

    def handle(self, *args: Any, host: str, port: int, no_static: bool, **options: Any) -> None:
        queues = worker_queues()
        commands = {
            "web": web_command(host, port, serve_static=not no_static),
            "worker": worker_command(queues),
            "beat": beat_command(),
            "agent": tunnel_agent_command(),
        }
        self.stdout.write(f"runportal: web on http://{host}:{port}/, worker queues {queues}")
        stop = threading.Event()

        def ask_to_stop(signum: int, frame: Any) -> None:
            stop.set()

        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, ask_to_stop)

        children: dict[str, subprocess.Popen[bytes]] = {}
        failed: str | None = None
        try:
            for name, command in commands.items():
                children[name] = subprocess.Popen(
                    command,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    process_group=0,
                )
                threading.Thread(
                    target=self._forward, args=(name, children[name].stdout), daemon=True
                ).start()
            while not stop.wait(0.5):
                failed = next((n for n, c in children.items() if c.poll() is not None), None)
                if failed:
                    break
        finally:
            self._stop_all(children)
        if failed:
            raise CommandError(
                f"{failed} exited with code {children[failed].returncode}; stopped the others"
            )
        self.stdout.write("runportal: stopped")

    def _forward(self, name: str, stream: IO[bytes]) -> None:
        """Copy a child's output, each line prefixed with the child's name."""
        for line in iter(stream.readline, b""):
            self.stdout.write(f"{name:>6} | {line.decode(errors='replace').rstrip()}")

    def _stop_all(self, children: dict[str, subprocess.Popen[bytes]]) -> None:
        # SIGTERM to each child alone: uvicorn and Celery stop their own workers in order (a
        # signal to the whole group would kill a prefork pool's busy children mid-task).
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in children.values():
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for child in children.values():
            # Whatever is left in a child's group (the child itself after the grace, or a
            # grandchild that outlived it) is killed: nothing stays behind.
            _signal_group(child, signal.SIGKILL)
            child.wait()


def _signal_group(child: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(child.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
