"""``manage.py import_flavors --outpost SLUG FILE.yaml``: an existing service's flavors file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from django.core.management.base import BaseCommand, CommandError, CommandParser

from flavors.provisioning import ConfigError, flavor_file_import
from outposts.models import Outpost


class Command(BaseCommand):
    help = (
        "Make an Outpost's flavors, Hub policies and user rules what a flavors file of the "
        "existing JupyterHub Outpost service says (its flavors, hubs and users sections); all "
        "or nothing, idempotent. The Hubs the file names must exist. Prints what it created, "
        "changed and deleted, and where the file means something else under the portal's "
        "layering. Mapping: docs/flavors-import.md."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--outpost", required=True, help="the slug of the Outpost")
        parser.add_argument("file", type=Path, help="the flavors file, e.g. flavors.yaml")
        parser.add_argument(
            "--dry-run", action="store_true", help="check and report, then write nothing"
        )

    def handle(self, *args: Any, outpost: str, file: Path, dry_run: bool, **options: Any) -> None:
        row = Outpost.objects.filter(slug=outpost).first()
        if row is None:
            raise CommandError(f"no Outpost {outpost!r}")
        try:
            data = yaml.safe_load(file.read_text())
        except OSError as error:
            raise CommandError(f"cannot read {file}: {error.strerror}") from None
        except yaml.YAMLError as error:
            raise CommandError(f"{file} is not valid YAML: {error}") from None
        try:
            done = flavor_file_import(outpost=row, data=data or {}, dry_run=dry_run)
        except ConfigError as error:
            raise CommandError(f"{file}: {error}; nothing was changed") from None
        for line in done.summary.lines(unchanged=False):
            self.stdout.write(line)
        for line in done.plan.differences:
            self.stdout.write(self.style.WARNING(f"differs: {line}"))
        for line in done.plan.notes:
            self.stdout.write(f"note: {line}")
        summary = done.summary
        if summary.changes:
            self.stdout.write(
                f"{len(summary.created)} created, {len(summary.updated)} changed, "
                f"{len(summary.deleted)} deleted, {len(summary.unchanged)} unchanged"
            )
        else:
            self.stdout.write(f"nothing changed: Outpost {outpost!r} already is as {file} says")
        if dry_run:
            self.stdout.write(self.style.WARNING("dry run: nothing was written"))
