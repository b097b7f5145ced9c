"""``manage.py run_outpost_worker SLUG``: a Celery worker that serves only one Outpost's queue,
to run next to that Outpost's system (docs/workers.md).

The command replaces itself with the worker (exec), so that a service manager's signals
(systemd, Kubernetes) reach Celery directly and a warm shutdown finishes running tasks.
"""

from __future__ import annotations

import os
import shlex
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from outposts.management.commands.runportal import worker_command
from outposts.models import Outpost


def outpost_worker_command(
    *, outpost: Outpost, concurrency: int | None = None, hostname: str | None = None
) -> list[str]:
    """runportal's worker command line, on the Outpost's queue alone, named after it."""
    command = [*worker_command([outpost.celery_queue])]
    command += ["--hostname", hostname or f"{outpost.slug}@%h"]
    if concurrency is not None:
        command += ["--concurrency", str(concurrency)]
    return command


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = (
        "Run a Celery worker that serves only this Outpost's queue (its lifecycle tasks), "
        "with the same options as runportal's worker."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="the Outpost's slug")
        parser.add_argument(
            "--concurrency",
            type=positive_int,
            help="tasks run at once; default PORTAL_WORKER_CONCURRENCY",
        )
        parser.add_argument(
            "--hostname", help="the worker's node name; default <slug>@<this host's name>"
        )
        parser.add_argument(
            "--print-command",
            action="store_true",
            help="print the equivalent celery command line instead of running it",
        )

    def handle(
        self,
        *args: Any,
        slug: str,
        concurrency: int | None,
        hostname: str | None,
        print_command: bool,
        **options: Any,
    ) -> None:
        outpost = Outpost.objects.filter(slug=slug).first()
        if outpost is None:
            known = ", ".join(Outpost.objects.values_list("slug", flat=True)) or "none"
            raise CommandError(f"There is no Outpost {slug!r}; the Outposts are: {known}.")
        command = outpost_worker_command(
            outpost=outpost, concurrency=concurrency, hostname=hostname
        )
        if print_command:
            self.stdout.write(shlex.join(command))
            return
        queue = outpost.celery_queue
        self.stdout.write(f"run_outpost_worker: Outpost {outpost.slug}, queue {queue}")
        self.stdout.flush()
        # The worker opens its own connections; none of ours may leak into it.
        connections.close_all()
        # An argument list, no shell: nothing in it is parsed again.
        os.execv(command[0], command)  # noqa: S606
