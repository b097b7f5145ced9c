"""The server admin: a site admin sees the servers of their Outposts, read-only, and stops
them (the list's action, or the Stop button of a server's page)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from audit.services import audit_stop
from outposts import services
from outposts.admin.scoping import (
    OutpostScopedAdmin,
    RecordsOnlyAdmin,
    administers,
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

    # What an admin scans for first comes first. The list fits a 1440 px screen beside both
    # sidebars (tests/browser/test_admin_layout.py): flavors by name, times in short, and the
    # long start id on the server's page (and in the search).
    list_display = [
        "server",
        "status",
        "flavor_name",
        "outpost_name",
        "hub_name",
        "created",
        "runtime_ends",
    ]
    list_filter = [
        ("outpost", admin.RelatedOnlyFieldListFilter),
        ("hub", admin.RelatedOnlyFieldListFilter),
        "status",
        ("flavor", admin.RelatedOnlyFieldListFilter),
    ]
    list_select_related = ["outpost", "hub", "flavor"]
    search_fields = ["user_name", "name", "start_id"]
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
        "spawner_log_shown",
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

    class Media:
        # The list fits a 1440 px screen.
        css = {"all": ["outposts/admin.css"]}

    @admin.display(description="how it is reached")
    def reached(self, obj: Server) -> str:
        return server_reach_text(server=obj)

    @admin.display(description="server", ordering="user_name")
    def server(self, obj: Server) -> str:
        return server_title(obj)

    @admin.display(description="spawner log")
    def spawner_log_shown(self, obj: Server) -> str:
        """The last lines the spawner logged while it started and stopped, as it wrote them
        (escaped), with the error the user is not shown at the end."""
        if not obj.spawner_log:
            return "-"
        return format_html('<pre class="spawner-log">{}</pre>', obj.spawner_log)

    @admin.display(description="flavor", ordering="flavor__name")
    def flavor_name(self, obj: Server) -> str | None:
        return obj.flavor.name if obj.flavor else None

    # Names as text, not the related rows themselves: the admin would keep those on one line.
    @admin.display(description="Outpost", ordering="outpost__name")
    def outpost_name(self, obj: Server) -> str:
        return obj.outpost.name

    @admin.display(description="Hub", ordering="hub__name")
    def hub_name(self, obj: Server) -> str:
        return obj.hub.name

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Server) -> str:
        return short_time(obj.created_at)

    @admin.display(description="runtime ends", ordering="end_at")
    def runtime_ends(self, obj: Server) -> str | None:
        return short_time(obj.end_at) if obj.end_at else None

    def has_stop_permission(self, request: HttpRequest, obj: Server | None = None) -> bool:
        return self._allowed(request, obj)

    def _stop(self, request: HttpRequest, server: Server) -> None:
        status_before = server.status
        server = services.server_stop(server=server)
        audit_stop(
            server=server,
            actor=request.user,
            reason="Stopped from the admin",
            status_before=status_before,
        )

    @admin.action(description="Stop selected servers", permissions=["stop"])
    def stop_servers(self, request: HttpRequest, queryset: QuerySet[Server]) -> None:
        # The queryset is already limited to the user's Outposts by get_queryset.
        asked = 0
        for server in queryset.active():
            self._stop(request, server)
            asked += 1
        self.message_user(request, f"Asked {asked} server(s) to stop.", messages.SUCCESS)

    def get_urls(self) -> list[URLPattern]:
        stop = path(
            "<path:object_id>/stop/",
            self.admin_site.admin_view(require_POST(self.stop_view)),
            name="outposts_server_stop",
        )
        return [stop, *super().get_urls()]

    def stop_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The Stop button of a server's page (a POST, CSRF-checked by admin_view)."""
        # get_object answers from get_queryset: another Outpost's server is not found.
        server = self.get_object(request, unquote(object_id))
        if server is None or not self.has_stop_permission(request, server):
            raise Http404("No such server.")
        page = reverse("admin:outposts_server_change", args=[server.pk])
        if not server.is_active:
            self.message_user(
                request, f"Nothing to stop: {server_title(server)} has ended.", messages.ERROR
            )
            return HttpResponseRedirect(page)
        self._stop(request, server)
        self.message_user(request, f"Asked {server_title(server)} to stop.", messages.SUCCESS)
        return HttpResponseRedirect(page)

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Server | None = None,
    ) -> HttpResponse:
        if obj is not None:
            context["title"] = server_title(obj)
            context["subtitle"] = f"{obj.get_status_display()} on {obj.outpost}, Hub {obj.hub}"
            # Once asked, a stop is under way (server_stop would do nothing more).
            if obj.is_active and not obj.stop_pending and self.has_stop_permission(request, obj):
                context["stop_url"] = reverse("admin:outposts_server_stop", args=[obj.pk])
        return super().render_change_form(request, context, add, change, form_url, obj)


def short_time(value: datetime) -> str:
    """A time as the server list shows it, in the portal's time zone: 2026-12-01 18:57."""
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M")


def server_title(server: Server) -> str:
    """A server as an admin names it: its Hub user's and its own name."""
    if server.name:
        return f"{server.user_name}’s server {server.name}"
    return f"{server.user_name}’s default server"
