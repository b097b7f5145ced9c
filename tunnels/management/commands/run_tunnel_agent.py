"""``manage.py run_tunnel_agent [--name NAME]``: the tunnel agent, in the foreground, until
SIGINT or SIGTERM (docs/tunnels.md)."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from tunnels.agent import TunnelAgent
from tunnels.models import SAFE_NAME


class Command(BaseCommand):
    help = "Hold the SSH forwards of the tunnels this agent owns, until stopped."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--name",
            default="default",
            help="The agent's name: it holds the tunnels of Outposts whose SSH settings name it.",
        )
        parser.add_argument(
            "--interval",
            type=float,
            default=settings.TUNNEL_CHECK_INTERVAL,
            help="Seconds between two checks of the forwards.",
        )

    def handle(self, *args: Any, name: str, interval: float, **options: Any) -> None:
        if not SAFE_NAME.match(name):
            raise CommandError("--name: letters, digits, '.', '_' and '-' only.")
        stop = threading.Event()

        def ask_to_stop(signum: int, frame: Any) -> None:
            stop.set()

        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, ask_to_stop)
        self.stdout.write(f"run_tunnel_agent: agent {name}, checking every {interval:g} s")
        TunnelAgent(name=name, backoff_max=settings.TUNNEL_BACKOFF_MAX).run(
            stop=stop, interval=interval
        )
        self.stdout.write("run_tunnel_agent: stopped")
