"""The server admin: a site admin sees the servers of their Outposts, read-only."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from audit.services import audit_stop
from outposts import services
from outposts.admin.scoping import (
    OutpostScopedAdmin,
    RecordsOnlyAdmin,
    administers,
    administers_any,
)
from outposts.models import Server, SpawnEvent
from tunnels.selectors import server_reach_text


class SpawnEventInline(admin.TabularInline):
    model = SpawnEvent
    extra = 0
    fields = ["created_at", "progress", "message", "failed", "ready"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return obj is None or administers(request, obj.outpost_id)


@admin.register(Server)
class ServerAdmin(RecordsOnlyAdmin, OutpostScopedAdmin):
    """Servers are bookkeeping: read-only, never deleted (history), stopped by an action.

    The encrypted env (it holds the server's API token) and spawner state are never shown.
    """

    # What an admin scans for first comes first; the long start id last.
    list_display = [
        "user_name",
        "server_name",
        "status",
        "flavor",
        "outpost",
        "hub",
        "created_at",
        "end_at",
        "start_id",
    ]
    list_filter = [
        ("outpost", admin.RelatedOnlyFieldListFilter),
        ("hub", admin.RelatedOnlyFieldListFilter),
        "status",
        ("flavor", admin.RelatedOnlyFieldListFilter),
    ]
    list_select_related = ["outpost", "hub", "flavor"]
    search_fields = ["user_name", "name"]
    date_hierarchy = "created_at"
    inlines = [SpawnEventInline]
    actions = ["stop_servers"]
    fields = [
        "outpost",
        "hub",
        "flavor",
        "name",
        "start_id",
        "user_id",
        "user_name",
        "status",
        "address",
        "reached",
        "reported_address",
        "reported_at",
        "user_options",
        "overrides",
        "exit_code",
        "error",
        "created_at",
        "started_at",
        "ready_at",
        "end_at",
        "stop_requested_at",
        "stopped_at",
        "last_poll_at",
        "unknown_since",
        "removed_at",
        "updated_at",
    ]
    readonly_fields = fields

    @admin.display(description="how it is reached")
    def reached(self, obj: Server) -> str:
        return server_reach_text(server=obj)

    @admin.display(description="server name", ordering="name")
    def server_name(self, obj: Server) -> str:
        return obj.name or "(default)"

    def has_stop_permission(self, request: HttpRequest) -> bool:
        return administers_any(request)

    @admin.action(description="Stop selected servers", permissions=["stop"])
    def stop_servers(self, request: HttpRequest, queryset: QuerySet[Server]) -> None:
        # The queryset is already limited to the user's Outposts by get_queryset.
        asked = 0
        for server in queryset.active():
            status_before = server.status
            server = services.server_stop(server=server)
            audit_stop(
                server=server,
                actor=request.user,
                reason="Stopped from the admin",
                status_before=status_before,
            )
            asked += 1
        self.message_user(request, f"Asked {asked} server(s) to stop.", messages.SUCCESS)
