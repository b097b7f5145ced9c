"""Audit entries the portal writes itself: stops by admins and by the reconciler."""

from __future__ import annotations

from auditlog.models import LogEntry
from django.contrib.auth.models import AbstractBaseUser

from outposts.models import Server

RECONCILER = "reconciler"


def audit_stop(
    *, server: Server, actor: AbstractBaseUser | str, reason: str, status_before: str
) -> LogEntry:
    """Record that ``actor`` (a user, or a label such as "reconciler") stopped ``server``.

    The Hub's own stops are its users' business and are not recorded; these are the portal's.
    """
    user = actor if isinstance(actor, AbstractBaseUser) else None
    data: dict[str, object] = {"event": "stop", "reason": reason, "outpost_id": server.outpost_id}
    if user is None:
        data["actor"] = str(actor)
    return LogEntry.objects.log_create(
        server,
        force_log=True,
        action=LogEntry.Action.UPDATE,
        changes={"status": [str(status_before), str(server.status)]},
        actor=user,
        additional_data=data,
    )
