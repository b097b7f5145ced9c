"""What the tunnel agent may touch in the database, as PostgreSQL grants.

The agent runs beside a Hub, often on another machine than the portal. With the portal's own
database role it could read every Hub credential and every server's environment; with the
role these grants make it can read only what opening its tunnels needs (the tunnel rows, their
Outposts' SSH settings, a server's status) and write only a tunnel's health and a learnt host
key. ``manage.py tunnel_agent_grants`` prints or applies them (docs/tunnels.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from auditlog.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper

from outposts.models import Outpost, Server
from tunnels.models import OutpostSSH, Tunnel
from tunnels.selectors import AGENT_TUNNEL_FIELDS


@dataclass(frozen=True)
class TablePrivileges:
    model: type[models.Model]
    select: tuple[str, ...] = ()
    update: tuple[str, ...] = ()
    insert: bool = False


# Field names; the statements use their columns. Keep in step with tunnels.selectors
# .tunnels_of_agent (what the agent reads) and tunnels.services (what it writes).
AGENT_PRIVILEGES = (
    TablePrivileges(
        Tunnel,
        # The keys, what tunnels_of_agent reads, and the column it orders by.
        select=("id", "server", "outpost", *AGENT_TUNNEL_FIELDS, "created_at"),
        update=(
            "desired_state",
            "state",
            "opened_generation",
            "failures",
            "last_error",
            "last_check_at",
            "opened_at",
            "updated_at",
        ),
    ),
    TablePrivileges(
        OutpostSSH,
        # Every field: a learnt host key is saved from a locked, whole row.
        select=tuple(field.name for field in OutpostSSH._meta.concrete_fields),
        update=("known_hosts", "updated_at"),  # a host key learnt where accept-new is on
    ),
    TablePrivileges(Outpost, select=("id", "slug", "name")),
    TablePrivileges(Server, select=("id", "status")),
    # A learnt host key is audited like every change of SSH settings (audit/registry.py).
    TablePrivileges(ContentType, select=("id", "app_label", "model")),
    TablePrivileges(LogEntry, select=("id",), insert=True),  # INSERT ... RETURNING id
)


def agent_grant_statements(*, role: str, connection: BaseDatabaseWrapper) -> list[str]:
    """The GRANT statements that give database role ``role`` what the agent needs."""
    quote = connection.ops.quote_name
    statements = []
    for privileges in AGENT_PRIVILEGES:
        meta = privileges.model._meta
        for action, names in (("SELECT", privileges.select), ("UPDATE", privileges.update)):
            if names:
                columns = ", ".join(quote(meta.get_field(name).column) for name in names)
                statements.append(
                    f"GRANT {action} ({columns}) ON {quote(meta.db_table)} TO {quote(role)}"
                )
        if privileges.insert:
            statements.append(f"GRANT INSERT ON {quote(meta.db_table)} TO {quote(role)}")
    return statements
