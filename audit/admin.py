"""The audit in the admin, scoped like every other admin (outposts/admin/scoping.py).

Superusers see every entry. A site admin sees the entries of the Outposts they administer:
those of the Outposts themselves, of their flavors, policies and rules, and of the stops of
their servers. Hub entries belong to no Outpost (a Hub spans them): superusers only. A
project's managers see the entries of their projects' members, allocations and grants.
"""

from __future__ import annotations

from typing import Any

from auditlog.admin import LogEntryAdmin
from auditlog.models import LogEntry
from django.contrib import admin
from django.db.models import Model, Q, QuerySet
from django.http import HttpRequest

from outposts.admin.scoping import administers, administers_any
from outposts.selectors import outposts_administered_by
from projects.admin import managed_project_ids

admin.site.unregister(LogEntry)


@admin.register(LogEntry)
class ScopedLogEntryAdmin(LogEntryAdmin):
    list_display = ["created", "resource_url", "action", "msg_short", "who", "reason"]
    readonly_fields = [*LogEntryAdmin.readonly_fields, "who", "reason"]
    fieldsets = [
        (None, {"fields": ["created", "who", "resource_url", "reason"]}),
        ("Changes", {"fields": ["action", "msg"]}),
    ]

    @admin.display(description="who")
    def who(self, obj: LogEntry) -> str:
        # A user, or what acted without one (the reconciler, apply_config).
        if obj.actor is not None:
            return str(obj.actor)
        return (obj.additional_data or {}).get("actor") or "system"

    @admin.display(description="reason")
    def reason(self, obj: LogEntry) -> str:
        return (obj.additional_data or {}).get("reason", "")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        entries = super().get_queryset(request).select_related("content_type", "actor")
        if request.user.is_superuser:
            return entries
        outposts = list(outposts_administered_by(user=request.user).values_list("pk", flat=True))
        projects = list(managed_project_ids(request))
        return entries.filter(
            Q(additional_data__outpost_id__in=outposts)
            | Q(additional_data__project_id__in=projects)
        )

    def _allowed(self, request: HttpRequest, obj: Model | None) -> bool:
        if request.user.is_superuser:
            return True
        if obj is None:
            return administers_any(request) or bool(managed_project_ids(request))
        data = obj.additional_data or {}  # type: ignore[attr-defined]
        return administers(request, data.get("outpost_id")) or (
            data.get("project_id") in managed_project_ids(request)
        )

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self._allowed(request, None)

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._allowed(request, obj)
