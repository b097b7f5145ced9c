"""The Django admin for flavors: a site admin sees only the flavors of their Outposts."""

from __future__ import annotations

from django.contrib import admin

from flavors.models import Flavor
from outposts.admin import OutpostScopedAdmin


@admin.register(Flavor)
class FlavorAdmin(OutpostScopedAdmin):
    list_display = ["name", "display_name", "outpost", "weight", "max", "max_per_user", "runtime"]
    list_filter = [("outpost", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["outpost"]
    search_fields = ["name", "display_name"]
    fields = ["outpost", *Flavor.SETTINGS]
