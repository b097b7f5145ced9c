"""Who may see and change what in the admin: object permissions, enforced by every admin.

Superusers see everything. A staff site admin sees and changes only the Outposts on which they
hold ``outposts.change_outpost`` as a guardian object permission (or as a global permission,
which makes them an admin of every Outpost), and only those Outposts' flavors and servers.
guardian's own admin classes only manage permissions, they do not enforce them (house-style.md),
so every admin here filters ``get_queryset`` and answers ``has_*_permission(obj)`` itself.
Hubs span Outposts and hold credentials: only superusers manage them. A global
``change_hub`` permission is not enough, because a Hub admin decides which Outposts a Hub may
use and mints its API keys, which reaches into every Outpost.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from outposts.models import Outpost
from outposts.selectors import outposts_administered_by
from portal.permissions import cached_per_request


@cached_per_request
def _administered_ids(request: HttpRequest) -> set[int]:
    return set(outposts_administered_by(user=request.user).values_list("pk", flat=True))


def administers(request: HttpRequest, outpost_id: int | None) -> bool:
    """Whether the request's user administers the Outpost ``outpost_id``."""
    return outpost_id in _administered_ids(request)


def administers_any(request: HttpRequest) -> bool:
    return bool(_administered_ids(request))


class OutpostScopedAdmin(admin.ModelAdmin):
    """An admin for rows that belong to an Outpost (through ``outpost_field``).

    Model permissions alone would let a staff user with object permissions see nothing, and a
    staff user with global ones see everything; the Outpost a row belongs to decides instead.
    """

    outpost_field = "outpost"

    def outpost_id_of(self, obj: Model) -> int | None:
        return getattr(obj, f"{self.outpost_field}_id")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return (
            super()
            .get_queryset(request)
            .filter(**{f"{self.outpost_field}__in": outposts_administered_by(user=request.user)})
        )

    def _allowed(self, request: HttpRequest, obj: Model | None) -> bool:
        if obj is None:
            return administers_any(request)
        return administers(request, self.outpost_id_of(obj))

    def has_module_permission(self, request: HttpRequest) -> bool:
        return administers_any(request)

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._allowed(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._allowed(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return administers_any(request)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._allowed(request, obj)

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        # Choices must not name (or accept) Outposts the user does not administer.
        if db_field.remote_field.model is Outpost:
            kwargs["queryset"] = outposts_administered_by(user=request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class RecordsOnlyAdmin(admin.ModelAdmin):
    """Rows the portal writes (servers, tunnels): an admin views them and acts through the
    admin actions, never adds, edits or deletes them by hand. Put before OutpostScopedAdmin."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


class OutpostPartInline(admin.options.InlineModelAdmin):
    """An inline of rows that belong to the Outpost being edited.

    The parent Outpost admin already checked the Outpost; these answer for its rows.
    """

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return obj is None or administers(request, obj.pk)

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return obj is None or administers(request, obj.pk)

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return obj is None or administers(request, obj.pk)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return obj is None or administers(request, obj.pk)


class SuperuserOnlyAdmin(admin.ModelAdmin):
    """An admin only superusers reach, whatever global model permissions a user holds."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return request.user.is_superuser

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return request.user.is_superuser

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return request.user.is_superuser
