"""The Django admin for flavors: a site admin sees only the flavors of their Outposts.

Every write here tells the Hubs of the flavor's Outpost their new flavor table
(flavors_changed: once per save, after it commits). Hub policies and user rules are edited on
their Outpost's page (outposts/admin/policies.py), where their choices are that Outpost's.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.actions import delete_selected
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from flavors.models import Flavor
from flavors.services import flavors_changed
from outposts.admin.scoping import OutpostScopedAdmin
from outposts.capacity import flavors_with_in_use
from outposts.models import Outpost


@admin.register(Flavor)
class FlavorAdmin(OutpostScopedAdmin):
    list_display = [
        "name",
        "display_name",
        "outpost",
        "weight",
        "in_use",
        "max",
        "max_per_user",
        "runtime",
    ]
    list_filter = [("outpost", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["outpost"]
    search_fields = ["name", "display_name"]
    fields = ["outpost", *Flavor.SETTINGS]
    # Django's own, whose refusal of used flavors says to close them (below).
    actions = ["delete_selected"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Flavor]:
        # Counted in the list's own query: one per page, not one per flavor.
        return flavors_with_in_use(flavors=super().get_queryset(request))

    @admin.display(description="in use", ordering="in_use")
    def in_use(self, obj: Flavor) -> int:
        """Active servers of the flavor, as its max counts them (queued and unknown too)."""
        return obj.in_use  # type: ignore[attr-defined]

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> list[str]:
        # A flavor's policies, rules and servers are its Outpost's: moving it would leave
        # them naming a flavor of another Outpost.
        return ["outpost"] if obj is not None else []

    def save_model(self, request: HttpRequest, obj: Flavor, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if form.has_changed():
            flavors_changed(outpost=obj.outpost)

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple[Any, ...]:
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        if protected:
            # The servers would block the deletion, not be deleted: Django would otherwise
            # blame the missing (and never granted) permission to delete servers.
            perms_needed = set()
        return deleted, counts, perms_needed, protected

    def render_delete_form(self, request: HttpRequest, context: dict[str, Any]) -> HttpResponse:
        if context.get("protected"):
            context["close_instead"] = Flavor.CLOSE_INSTEAD_OF_DELETE
        return super().render_delete_form(request, context)

    @admin.action(permissions=["delete"], description="Delete selected %(verbose_name_plural)s")
    def delete_selected(self, request: HttpRequest, queryset: QuerySet[Flavor]) -> Any:
        """Django's own action, whose refusal of used flavors also says to close them."""
        response = delete_selected(self, request, queryset)
        if isinstance(response, TemplateResponse) and response.context_data.get("protected"):
            response.context_data["close_instead"] = Flavor.CLOSE_INSTEAD_OF_DELETE
        return response

    def delete_model(self, request: HttpRequest, obj: Flavor) -> None:
        outpost = obj.outpost
        super().delete_model(request, obj)
        flavors_changed(outpost=outpost)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Flavor]) -> None:
        outposts = list(Outpost.objects.filter(flavors__in=queryset).distinct())
        super().delete_queryset(request, queryset)
        for outpost in outposts:
            flavors_changed(outpost=outpost)
