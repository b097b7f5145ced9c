"""The Hub admin: only superusers manage Hubs (see outposts.admin.scoping)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone

from outposts import hubs
from outposts.admin.scoping import SuperuserOnlyAdmin
from outposts.models import Hub, HubAPIKey


class HubForm(forms.ModelForm):
    """Validates a Hub's fields; HubAdmin writes them through the Hub services.

    Credentials are write-only: a new value replaces the stored digest or token.
    """

    new_secret = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="The Hub's HTTP Basic password. Only a digest is stored; empty keeps it.",
    )
    new_flavors_update_token = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Token for the Hub's flavor-update call-back; stored encrypted; empty keeps it.",
    )
    new_recreate_forward_token = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="For a Hub that tunnels itself: a Hub API token with the scope "
        "custom:sshnode:restart; stored encrypted; empty keeps it.",
    )

    class Meta:
        model = Hub
        # Every field Hub.clean() checks must be here: the ModelForm runs full_clean() before
        # save, and a field missing from the form would turn its error into a ValueError.
        fields = ["name", "is_active", "outposts", "callback_url_prefixes", "may_restart_tunnels"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if not self.instance.pk and not cleaned.get("new_secret"):
            self.add_error("new_secret", "A new Hub needs a secret.")
        return cleaned


class HubAPIKeyInline(admin.TabularInline):
    """Keys are created by the "Create API key" action only: the key is shown once there."""

    model = HubAPIKey
    extra = 0
    fields = ["name", "created_at", "expires_at", "last_used_at", "revoked"]
    readonly_fields = ["name", "created_at", "last_used_at"]
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return request.user.is_superuser

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return request.user.is_superuser


@admin.register(Hub)
class HubAdmin(SuperuserOnlyAdmin):
    """Hubs are tenants across Outposts: granting Outposts and minting keys is a superuser's."""

    form = HubForm
    list_display = ["name", "is_active", "created_at"]
    list_filter = ["is_active", "outposts"]
    search_fields = ["name"]
    filter_horizontal = ["outposts"]
    inlines = [HubAPIKeyInline]
    actions = ["create_api_key"]
    fields = [
        "name",
        "is_active",
        "outposts",
        "callback_url_prefixes",
        "may_restart_tunnels",
        "new_secret",
        "new_flavors_update_token",
        "new_recreate_forward_token",
    ]

    def save_model(self, request: HttpRequest, obj: Hub, form: HubForm, change: bool) -> None:
        """Write the validated form through hub_create / hub_update, Outposts included."""
        data = form.cleaned_data
        values: dict[str, Any] = {
            # From obj, not cleaned_data: the form keeps model defaults for fields not posted.
            **{name: getattr(obj, name) for name in hubs.HUB_SETTINGS},
            "outposts": data["outposts"],
            "flavors_update_token": data["new_flavors_update_token"] or None,
            "recreate_forward_token": data["new_recreate_forward_token"] or None,
        }
        if change:
            # obj holds the form's values already: hub_update compares them with the row.
            obj.refresh_from_db()
            hubs.hub_update(hub=obj, secret=data["new_secret"] or None, **values)
        else:
            # Django goes on with obj (inlines, log entry, redirect): make it the new row.
            obj.pk = hubs.hub_create(secret=data["new_secret"], **values).pk
            obj.refresh_from_db()

    def save_related(
        self, request: HttpRequest, form: HubForm, formsets: list[Any], change: bool
    ) -> None:
        # Not form.save_m2m(): save_model has set the Outposts.
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    # "change" is superuser-only here (SuperuserOnlyAdmin), so is minting a key.
    @admin.action(description="Create API key", permissions=["change"])
    def create_api_key(self, request: HttpRequest, queryset: QuerySet[Hub]) -> TemplateResponse:
        """Create one key per selected Hub and show the keys on this response only.

        Never through messages: those are kept in the session or a cookie until shown.
        """
        name = f"created in the admin by {request.user.get_username()} on {timezone.now():%Y-%m-%d}"
        created = [(hub, hubs.hub_api_key_create(hub=hub, name=name)[1]) for hub in queryset]
        self.message_user(request, f"Created {len(created)} API key(s).", messages.SUCCESS)
        context = {
            **self.admin_site.each_context(request),
            "title": "New API keys",
            "opts": self.model._meta,
            "created": created,
        }
        return TemplateResponse(request, "admin/outposts/hub/api_keys_created.html", context)
