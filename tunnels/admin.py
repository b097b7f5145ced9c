"""The tunnels admin: an Outpost's SSH settings and its tunnels, scoped to the Outposts the
user administers (outposts/admin/scoping.py). Tunnels are read-only (the agent writes their
state); the "restart" actions re-create them."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from outposts import dispatch
from outposts.admin.scoping import OutpostScopedAdmin, RecordsOnlyAdmin, administers_any
from tunnels import services
from tunnels.models import OutpostSSH, Tunnel


class OutpostSSHForm(forms.ModelForm):
    """The key is write-only: a new one replaces the stored (encrypted) key."""

    new_key = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 4, "autocomplete": "off"}),
        help_text="A private key (OpenSSH or PEM text) instead of a key file path; stored "
        "encrypted, never shown; empty keeps the stored one.",
    )
    remove_key = forms.BooleanField(required=False, help_text="Forget the stored key.")

    class Meta:
        model = OutpostSSH
        # Every field OutpostSSH.clean() checks but the key, which new_key writes.
        fields = [
            "outpost",
            "reach",
            "jump_host",
            "jump_port",
            "user",
            "key_path",
            "known_hosts",
            "accept_new_host_keys",
            "agent",
            "bind_host",
            "advertised_host",
            "hub_system",
        ]

    def _post_clean(self) -> None:
        # Before the model's clean() (in super()._post_clean), which checks path-or-key.
        if self.cleaned_data.get("new_key"):
            self.instance.key = self.cleaned_data["new_key"]
        elif self.cleaned_data.get("remove_key"):
            self.instance.key = None
        super()._post_clean()


@admin.register(OutpostSSH)
class OutpostSSHAdmin(OutpostScopedAdmin):
    form = OutpostSSHForm
    list_display = ["outpost", "reach", "jump_host", "jump_port", "user", "agent", "has_key"]
    list_filter = ["reach", "agent"]
    actions = ["restart_tunnels"]
    fieldsets = [
        (None, {"fields": ["outpost", "reach"]}),
        (
            "SSH",
            {
                "fields": [
                    "jump_host",
                    "jump_port",
                    "user",
                    "key_path",
                    "new_key",
                    "remove_key",
                    "known_hosts",
                    "accept_new_host_keys",
                ]
            },
        ),
        ("Tunnel agent", {"fields": ["agent", "bind_host", "advertised_host"]}),
        ("Hubs that tunnel themselves", {"fields": ["hub_system"]}),
    ]

    @admin.display(boolean=True, description="stored key")
    def has_key(self, obj: OutpostSSH) -> bool:
        return obj.key is not None

    def delete_model(self, request: HttpRequest, obj: OutpostSSH) -> None:
        services.outpost_ssh_delete(ssh=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[OutpostSSH]) -> None:
        for ssh in queryset:
            services.outpost_ssh_delete(ssh=ssh)

    def save_model(self, request: HttpRequest, obj: OutpostSSH, form: Any, change: bool) -> None:
        if services.outpost_ssh_save(ssh=obj):
            self.message_user(
                request, "The connection settings changed: the Outpost's tunnels are re-created."
            )

    def has_restart_permission(self, request: HttpRequest) -> bool:
        return administers_any(request)

    @admin.action(
        description="Restart the tunnels of the selected Outposts", permissions=["restart"]
    )
    def restart_tunnels(self, request: HttpRequest, queryset: QuerySet[OutpostSSH]) -> None:
        for ssh in queryset:
            dispatch.queue_outpost_tunnels_restart(outpost_id=ssh.outpost_id)
        self.message_user(
            request, f"Restarting the tunnels of {queryset.count()} Outpost(s).", messages.SUCCESS
        )


@admin.register(Tunnel)
class TunnelAdmin(RecordsOnlyAdmin, OutpostScopedAdmin):
    list_display = [
        "server",
        "outpost",
        "state",
        "desired_state",
        "generation",
        "opened_generation",
        "bind_address",
        "remote_address",
        "agent",
        "last_check_at",
        "last_error",
    ]
    list_filter = [("outpost", admin.RelatedOnlyFieldListFilter), "state", "desired_state", "agent"]
    list_select_related = ["server", "outpost"]
    search_fields = ["server__user_name", "server__name", "remote_host"]
    actions = ["restart_tunnels"]
    # Every field, read only: the portal and the agents write tunnels, never an admin.
    readonly_fields = [field.name for field in Tunnel._meta.fields if field.name != "id"]
    fields = readonly_fields

    @admin.display(description="bind address")
    def bind_address(self, obj: Tunnel) -> str:
        return services.address_join(host=obj.bind_host, port=obj.bind_port)

    @admin.display(description="remote address")
    def remote_address(self, obj: Tunnel) -> str:
        return services.address_join(host=obj.remote_host, port=obj.remote_port)

    def has_restart_permission(self, request: HttpRequest) -> bool:
        return administers_any(request)

    @admin.action(description="Restart the selected tunnels", permissions=["restart"])
    def restart_tunnels(self, request: HttpRequest, queryset: QuerySet[Tunnel]) -> None:
        # The queryset is already limited to the user's Outposts by get_queryset.
        bumped = services.tunnels_bump(tunnels=queryset)
        self.message_user(request, f"Restarting {bumped} tunnel(s).", messages.SUCCESS)
