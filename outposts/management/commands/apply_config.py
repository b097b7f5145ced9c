"""``manage.py apply_config FILE.yaml``: upsert Outposts (flavors, Hub policies, user rules) and
Hubs from a YAML file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.registry import audit_actor
from outposts.provisioning import ConfigError, config_apply


class Command(BaseCommand):
    help = (
        "Create or update Outposts (with their flavors, Hub policies and user rules) and Hubs "
        "from a YAML file; idempotent, all or nothing. Fields are named as in the models: "
        "outposts[].allowed_overrides, allowed_user_options, allowed_env, min_system_uid "
        "(null = no check), unix_user_rule/_template/_table (docs/slurm.md), queue, flavors, "
        "hub_policies, user_rules, ...; "
        "hubs[].callback_url_prefixes (http(s) URL prefixes the portal may call back). "
        "Format: README.md, 'apply_config format', and docs/configuration.md."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="the YAML file, e.g. demo/portal.yaml")
        parser.add_argument(
            "--dry-run", action="store_true", help="validate and report, then write nothing"
        )

    def handle(self, *args: Any, file: Path, dry_run: bool, **options: Any) -> None:
        try:
            data = yaml.safe_load(file.read_text())
        except OSError as error:
            raise CommandError(f"cannot read {file}: {error.strerror}") from None
        except yaml.YAMLError as error:
            raise CommandError(f"{file} is not valid YAML: {error}") from None
        try:
            # No one is logged in: the audit names the command and the file as the actor.
            with audit_actor(label=f"apply_config {file}"):
                summary = config_apply(data=data or {}, dry_run=dry_run)
        except ConfigError as error:
            raise CommandError(f"{file}: {error}; nothing was changed") from None
        for line in summary.lines():
            self.stdout.write(line)
        if dry_run:
            self.stdout.write(self.style.WARNING("dry run: nothing was written"))
