"""The Django admin for Outposts, Hubs and servers, scoped by object permissions.

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

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import NON_FIELD_ERRORS, PermissionDenied, ValidationError
from django.db.models import Model, Q, QuerySet
from django.http import Http404, HttpRequest
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils import timezone
from guardian.admin import ReinforcedGuardedModelAdminMixin

from flavors.models import Flavor, HubPolicy, UserRule
from flavors.preview import flavor_preview
from flavors.services import flavors_changed
from outposts import hubs, services
from outposts.models import Hub, HubAPIKey, Outpost, Server, SpawnEvent
from outposts.selectors import outposts_administered_by


def _administered_ids(request: HttpRequest) -> set[int]:
    # Cached on the request: a change list asks for every row.
    cached: set[int] | None = getattr(request, "_administered_outpost_ids", None)
    if cached is None:
        cached = set(outposts_administered_by(user=request.user).values_list("pk", flat=True))
        request._administered_outpost_ids = cached  # type: ignore[attr-defined]
    return cached


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


class FlavorInline(OutpostPartInline, admin.TabularInline):
    model = Flavor
    extra = 0
    fields = list(Flavor.SETTINGS)


def hub_choices(*, request: HttpRequest, outpost: Outpost) -> QuerySet[Hub]:
    """The Hubs a policy or rule of ``outpost`` may name in this user's admin.

    A site admin may name the Hubs granted their Outpost, and those its policies and rules
    already name (a grant withdrawn later must not make the Outpost's form unsavable), but
    never learns of the others. A superuser may prepare rules for any Hub.
    """
    if request.user.is_superuser:
        return Hub.objects.order_by("name")
    return (
        Hub.objects.filter(
            Q(outposts=outpost) | Q(policies__outpost=outpost) | Q(user_rules__outpost=outpost)
        )
        .distinct()
        .order_by("name")
    )


class OutpostRuleInline(OutpostPartInline):
    """A policy or rule inline: its choices are this Outpost's flavors and its Hubs only."""

    # Each formset class is made afresh per request, so narrowing its form's fields here
    # narrows them for this request only.
    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)
        fields = formset.form.base_fields
        for name in ("flavor", "flavors"):
            if name in fields:
                fields[name].queryset = Flavor.objects.filter(outpost=obj)
        for name in ("hub", "hubs"):
            if name in fields:
                fields[name].queryset = hub_choices(request=request, outpost=obj)
        return formset


class HubPolicyInline(OutpostRuleInline, admin.TabularInline):
    model = HubPolicy
    extra = 0
    fields = ["hub", "flavor", "allowed", "cap", "overrides"]
    ordering = ["hub__name", "-flavor__weight", "flavor__name"]


class UserRuleForm(forms.ModelForm):
    """A user rule of one Outpost: it may only list that Outpost's flavors.

    The admin offers no others; this refuses them whoever builds the form.
    """

    class Meta:
        model = UserRule
        fields = [
            "position",
            "name",
            "hubs",
            "attributes",
            "negate",
            "weight",
            "forbidden",
            "flavors",
            "overrides",
        ]

    def clean_attributes(self) -> Any:
        # An empty field is no attributes (the rule matches nobody, negated everybody), not
        # the JSON null the column cannot hold.
        value = self.cleaned_data["attributes"]
        return {} if value is None else value

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        foreign = sorted(
            flavor.name
            for flavor in cleaned.get("flavors") or ()
            if flavor.outpost_id != self.instance.outpost_id
        )
        if foreign:
            self.add_error("flavors", f"Choose flavors of this Outpost, not {', '.join(foreign)}.")
        return cleaned


class UserRuleInline(OutpostRuleInline, admin.StackedInline):
    model = UserRule
    form = UserRuleForm
    extra = 0
    fields = [
        ("position", "name"),
        "hubs",
        "attributes",
        ("negate", "weight", "forbidden"),
        "flavors",
        "overrides",
    ]
    # The order that breaks ties between equal weights.
    ordering = ["position", "pk"]
    verbose_name_plural = "user rules (of those that match, the heaviest decides)"


class OutpostForm(forms.ModelForm):
    """The Outpost form (its fields come from OutpostAdmin); model rules on fields the user
    cannot edit still show.

    Outpost.clean() may refuse a field that is read-only for this user (a site admin's queue
    clashing with another Outpost's): Django would raise ValueError for an error on a field
    the form lacks (a 500); it is shown above the form instead.
    """

    def add_error(self, field: str | None, error: ValidationError | str | Any) -> None:
        if field is None and isinstance(error, ValidationError) and hasattr(error, "error_dict"):
            shown: dict[str, list[ValidationError]] = {}
            for name, errors in error.error_dict.items():
                if name == NON_FIELD_ERRORS or name in self.fields:
                    shown.setdefault(name, []).extend(errors)
                    continue
                label = Outpost._meta.get_field(name).verbose_name
                shown.setdefault(NON_FIELD_ERRORS, []).extend(
                    ValidationError(f"{label}: {message}") for message in ValidationError(errors)
                )
            error = ValidationError(shown)
        super().add_error(field, error)


class PolicyPreviewForm(forms.Form):
    """A Hub's user to preview: the Hub, the attributes it would authenticate them with and,
    for their own counts, their Hub user id."""

    hub = forms.ModelChoiceField(
        queryset=Hub.objects.none(), help_text="Of the Hubs granted this Outpost."
    )
    authentication = forms.JSONField(
        label="User attributes",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 60}),
        error_messages={
            "invalid": 'Not valid JSON. Type the attributes as a JSON object, e.g. {"name": '
            '"alice", "groups": ["staff"]}.'
        },
        help_text="What the Hub sends as the user's authentication, as a JSON object, e.g. "
        '{"name": "alice", "groups": ["staff"]}. Empty: no attributes (the Hub\'s answer).',
    )
    user_id = forms.RegexField(
        label="Hub user id",
        regex=r"^[0-9]+\Z",
        max_length=Server._meta.get_field("user_id").max_length,
        required=False,
        help_text="Optional: also count this Hub user's own active servers.",
    )

    def __init__(self, *args: Any, outpost: Outpost, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Only the Hubs that may use the Outpost: any other gets nothing here.
        self.fields["hub"].queryset = outpost.hubs.order_by("name")

    def clean_authentication(self) -> dict[str, Any] | None:
        value = self.cleaned_data["authentication"]
        if value is not None and not isinstance(value, dict):
            raise ValidationError(
                f"Must be a JSON object of attribute names to values, not a {type(value).__name__}."
            )
        return value


LOCAL_PROCESS_WARNING = (
    "SimpleLocalProcessSpawner runs every user's server as the worker's own OS user: user "
    "code can read the worker's environment and files, including the portal's secrets. Use "
    "it only for demos and tests; `manage.py check --deploy --database default` warns about it."
)


@admin.register(Outpost)
class OutpostAdmin(ReinforcedGuardedModelAdminMixin, OutpostScopedAdmin):
    """Outposts with their flavors; superusers also manage who administers each one.

    A site admin controls their own system (spawner class and configuration, limits, allow-
    lists) but not the deployment's wiring: the slug names the API base URL Hubs are
    configured with, and the queue decides whose workers run the Outpost's tasks (another
    Outpost's queue would run this Outpost's spawner on that Outpost's machines).
    """

    form = OutpostForm
    # guardian's change form with a "Who can use what" button next to its own.
    change_form_template = "admin/outposts/outpost/change_form.html"
    list_display = ["name", "slug", "state", "is_default", "spawner_class", "celery_queue"]
    list_filter = ["state"]
    search_fields = ["name", "slug"]
    inlines = [FlavorInline, HubPolicyInline, UserRuleInline]
    fieldsets = [
        (None, {"fields": ["slug", "name", "state", "state_message", "is_default"]}),
        (
            "Spawner",
            {
                "fields": [
                    "spawner_class",
                    "spawner_config",
                    "allowed_overrides",
                    "allowed_user_options",
                    "min_system_uid",
                ],
                "description": LOCAL_PROCESS_WARNING,
            },
        ),
        (
            "Limits and timing",
            {
                "fields": [
                    "max_servers_per_user",
                    "queue",
                    "poll_interval",
                    "start_timeout",
                    "unknown_grace",
                ]
            },
        ),
    ]

    # Site-wide wiring: which Outpost answers at the site root, where Hubs find it, and
    # which workers run its tasks.
    SUPERUSER_ONLY_FIELDS = ["slug", "is_default", "queue"]

    def outpost_id_of(self, obj: Model) -> int | None:
        return obj.pk

    def get_queryset(self, request: HttpRequest) -> QuerySet[Outpost]:
        return admin.ModelAdmin.get_queryset(self, request).filter(
            pk__in=outposts_administered_by(user=request.user)
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> list[str]:
        return [] if request.user.is_superuser else list(self.SUPERUSER_ONLY_FIELDS)

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A site admin could not reach an Outpost they created (no permission on it yet).
        return request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return request.user.is_superuser

    def get_inlines(self, request: HttpRequest, obj: Model | None) -> list[Any]:
        # Policies and rules name flavors, which a new Outpost has yet to have saved.
        return list(self.inlines) if obj is not None else [FlavorInline]

    def save_related(
        self, request: HttpRequest, form: OutpostForm, formsets: list[Any], change: bool
    ) -> None:
        super().save_related(request, form, formsets, change)
        # One push per save, however many flavors, policies and rules it changed.
        if {"state", "state_message"} & set(form.changed_data) or any(
            formset.has_changed() for formset in formsets
        ):
            flavors_changed(outpost=form.instance)

    def get_urls(self) -> list[URLPattern]:
        preview = path(
            "<path:object_id>/preview/",
            self.admin_site.admin_view(self.preview_view),
            name="outposts_outpost_preview",
        )
        return [preview, *super().get_urls()]

    def preview_view(self, request: HttpRequest, object_id: str) -> TemplateResponse:
        """The "who can use what" preview: the flavors a Hub's user would get here, and why.

        The attributes are posted, not put in the URL: they describe a person, and URLs end
        up in access logs and browser histories.
        """
        if not administers_any(request):
            raise PermissionDenied
        outpost = self.get_object(request, unquote(object_id))
        if outpost is None:
            raise Http404("No such Outpost.")
        form = PolicyPreviewForm(
            request.POST if request.method == "POST" else None, outpost=outpost
        )
        preview = None
        if form.is_valid():
            preview = flavor_preview(
                hub=form.cleaned_data["hub"],
                outpost=outpost,
                authentication=form.cleaned_data["authentication"],
                user_id=form.cleaned_data["user_id"] or None,
            )
        context = {
            **self.admin_site.each_context(request),
            "title": f"Who can use what on {outpost}",
            "opts": self.opts,
            "original": outpost,
            "form": form,
            "preview": preview,
        }
        return TemplateResponse(request, "admin/outposts/outpost/preview.html", context)


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

    class Meta:
        model = Hub
        # Every field Hub.clean() checks must be here: the ModelForm runs full_clean() before
        # save, and a field missing from the form would turn its error into a ValueError.
        fields = ["name", "is_active", "outposts", "callback_url_prefixes"]

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
        "new_secret",
        "new_flavors_update_token",
    ]

    def save_model(self, request: HttpRequest, obj: Hub, form: HubForm, change: bool) -> None:
        """Write the validated form through hub_create / hub_update, Outposts included."""
        data = form.cleaned_data
        values: dict[str, Any] = {
            # From obj, not cleaned_data: the form keeps model defaults for fields not posted.
            **{name: getattr(obj, name) for name in hubs.HUB_SETTINGS},
            "outposts": data["outposts"],
            "flavors_update_token": data["new_flavors_update_token"] or None,
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
class ServerAdmin(OutpostScopedAdmin):
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

    @admin.display(description="server name", ordering="name")
    def server_name(self, obj: Server) -> str:
        return obj.name or "(default)"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_stop_permission(self, request: HttpRequest) -> bool:
        return administers_any(request)

    @admin.action(description="Stop selected servers", permissions=["stop"])
    def stop_servers(self, request: HttpRequest, queryset: QuerySet[Server]) -> None:
        # The queryset is already limited to the user's Outposts by get_queryset.
        asked = 0
        for server in queryset.active():
            services.server_stop(server=server)
            asked += 1
        self.message_user(request, f"Asked {asked} server(s) to stop.", messages.SUCCESS)
