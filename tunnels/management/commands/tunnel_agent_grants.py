"""``manage.py tunnel_agent_grants --role ROLE [--apply]``: the PostgreSQL grants of a
database role for the tunnel agent, printed (to run with psql) or applied (docs/tunnels.md)."""

from __future__ import annotations

import re
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, transaction

from tunnels.agent_role import agent_grant_statements

ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class Command(BaseCommand):
    help = "Print (or apply) the grants of a PostgreSQL role that can run the tunnel agent."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--role", required=True, help="An existing PostgreSQL role.")
        parser.add_argument(
            "--apply", action="store_true", help="Run the statements instead of printing them."
        )

    def handle(self, *args: Any, role: str, apply: bool, **options: Any) -> None:
        if connection.vendor != "postgresql":
            raise CommandError("Per-column grants need PostgreSQL; SQLite has no roles.")
        if not ROLE_NAME.match(role):
            raise CommandError("--role: lower-case letters, digits and '_' only.")
        statements = agent_grant_statements(role=role, connection=connection)
        if not apply:
            self.stdout.write(";\n".join(statements) + ";")
            return
        with transaction.atomic(), connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
        self.stdout.write(f"tunnel_agent_grants: {len(statements)} grants applied to {role}")
