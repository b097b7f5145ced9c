"""The Outpost admin: a site admin's own system, its flavors, Hub policies and user rules."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.admin.widgets import FilteredSelectMultiple
from django.contrib.auth import get_user_model
from django.core.exceptions import NON_FIELD_ERRORS, PermissionDenied, ValidationError
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponseRedirect, QueryDict
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from guardian.admin import ReinforcedGuardedModelAdminMixin

from flavors.models import Flavor
from flavors.preview import flavor_preview
from flavors.services import flavors_changed
from outposts.admin.policies import HubPolicyInline, PolicyPreviewForm, UserRuleInline
from outposts.admin.scoping import OutpostPartInline, OutpostScopedAdmin, administers_any
from outposts.capacity import capacity_overview
from outposts.errors import TaskQueueUnavailable
from outposts.models import Outpost, Server
from outposts.selectors import outpost_site_admins, outposts_administered_by
from outposts.services import outpost_site_admins_set
from outposts.spawner_settings import spawner_classes_allowed
from outposts.trial import outpost_trial_request, trial_is_lost
from outposts.usage import UsageForm, usage_chart, usage_report
from outposts.workers import (
    outpost_worker_absence,
    outpost_worker_seen_annotated,
    outposts_with_worker_seen,
    worker_seen_text,
)


class FlavorInline(OutpostPartInline, admin.TabularInline):
    model = Flavor
    extra = 0
    fields = list(Flavor.SETTINGS)

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)

        class FlavorForm(formset.form):  # type: ignore[name-defined]
            def hand_clean_DELETE(self) -> None:  # noqa: N802 - Django's name
                # Django's refusal to delete a flavor that servers used, and what to do instead.
                try:
                    super().hand_clean_DELETE()
                except ValidationError as refusal:
                    if refusal.code != "deleting_protected":
                        raise
                    raise ValidationError([refusal, Flavor.CLOSE_INSTEAD_OF_DELETE]) from None

        formset.form = FlavorForm
        return formset


class OutpostForm(forms.ModelForm):
    """The Outpost form (its fields come from OutpostAdmin); model rules on fields the user
    cannot edit still show.

    Outpost.clean() may refuse a field that is read-only for this user (a site admin's queue
    clashing with another Outpost's): Django would raise ValueError for an error on a field
    the form lacks (a 500); it is shown above the form instead.
    """

    site_admins = forms.ModelMultipleChoiceField(
        queryset=get_user_model().objects.filter(is_staff=True, is_active=True),
        required=False,
        widget=FilteredSelectMultiple("site admins", is_stacked=False),
        help_text="Staff users who administer this Outpost: its settings, flavors, policies, "
        "rules, projects and servers, and nothing of other Outposts.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "spawner_class" in self.fields:
            # Picked from the operators' allow-list; a class saved before it was narrowed stays
            # shown as it is, and Outpost.clean refuses it until another is picked.
            choices = spawner_classes_allowed()
            current = self.instance.spawner_class
            if current and current not in choices:
                choices = [current, *choices]
            self.fields["spawner_class"] = forms.ChoiceField(
                label=self.fields["spawner_class"].label,
                choices=[(path, path) for path in choices],
                help_text=f"{Outpost._meta.get_field('spawner_class').help_text} The "
                "deployment's operators choose which ones (PORTAL_SPAWNER_CLASSES).",
            )
        if self.instance.pk and "site_admins" in self.fields:
            self.fields["site_admins"].initial = list(outpost_site_admins(outpost=self.instance))

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
    list_display = [
        "name",
        "slug",
        "state",
        "is_default",
        "spawner_class",
        "celery_queue",
        "worker_seen",
    ]
    list_filter = ["state"]
    search_fields = ["name", "slug"]
    actions = ["try_start"]
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
                    "allowed_override_values",
                    "allowed_user_options",
                    "allowed_env",
                    "min_system_uid",
                    "unix_user_rule",
                    "unix_user_template",
                    "unix_user_table",
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
                    "worker_seen",
                    "poll_interval",
                    "start_timeout",
                    "unknown_grace",
                ]
            },
        ),
        (
            "Servers that report their address",
            {
                "fields": [
                    "server_reports_address",
                    "server_callback_url",
                    "allowed_node_patterns",
                    "allowed_port_min",
                    "allowed_port_max",
                ],
                "description": "For batch systems and other hosts where a server's node and "
                "port are known only once it runs: outpost-start-server reports them "
                "(docs/tunnels-delayed.md).",
            },
        ),
    ]

    # Site-wide wiring: which Outpost answers at the site root, where Hubs find it, and
    # which workers run its tasks.
    SUPERUSER_ONLY_FIELDS = ["slug", "is_default", "queue"]

    class Media:
        # Its flavor and policy rows fit a 1440 px screen.
        css = {"all": ["outposts/admin.css"]}

    def outpost_id_of(self, obj: Model) -> int | None:
        return obj.pk

    def get_queryset(self, request: HttpRequest) -> QuerySet[Outpost]:
        return outposts_with_worker_seen(
            outposts=admin.ModelAdmin.get_queryset(self, request).filter(
                pk__in=outposts_administered_by(user=request.user)
            )
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> list[str]:
        shown = ["worker_seen"]
        return shown if request.user.is_superuser else [*self.SUPERUSER_ONLY_FIELDS, *shown]

    @admin.display(description="worker seen recently")
    def worker_seen(self, obj: Outpost) -> str:
        """Whether a worker serving the Outpost's queue stamped it lately (docs/workers.md)."""
        if obj.pk is None:
            return "-"
        return worker_seen_text(seen=outpost_worker_seen_annotated(outpost=obj))

    def has_try_start_permission(self, request: HttpRequest) -> bool:
        return administers_any(request)

    @admin.action(
        description="Try a start (a test server, stopped right after)", permissions=["try_start"]
    )
    def try_start(
        self, request: HttpRequest, queryset: QuerySet[Outpost]
    ) -> HttpResponseRedirect | None:
        """Ask a worker of one selected Outpost for a test start, and open its page
        (outposts/trial.py). The queryset is already limited to the user's Outposts."""
        outposts = list(queryset[:2])
        if len(outposts) != 1:
            self.message_user(request, "Select one Outpost to try a start on.", messages.WARNING)
            return None
        try:
            trial = outpost_trial_request(outpost=outposts[0], user=request.user)
        except TaskQueueUnavailable as error:
            self.message_user(request, error.message, messages.ERROR)
            return None
        return HttpResponseRedirect(
            reverse("admin:outposts_outpost_trial", args=[outposts[0].pk, trial.pk])
        )

    def trial_view(self, request: HttpRequest, object_id: str, trial_id: int) -> TemplateResponse:
        """A trial's page: waiting for a worker, running, or what it did."""
        outpost = self.get_object(request, unquote(object_id))  # scoped: theirs are not found
        if outpost is None or not self.has_try_start_permission(request):
            raise Http404("No such Outpost.")
        trial = outpost.trials.filter(pk=trial_id).first()
        if trial is None:
            raise Http404("No such trial.")
        lost = trial_is_lost(trial)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Try a start on {outpost}",
            "opts": self.opts,
            "original": outpost,
            "trial": trial,
            "result": trial.result,
            "lost": lost,
            "refresh": trial.finished_at is None and not lost,
            "absence": outpost_worker_absence(outpost=outpost) if trial.started_at is None else "",
            "try_user": settings.TRY_START_USER,
        }
        return TemplateResponse(request, "admin/outposts/outpost/try_start.html", context)

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A site admin could not reach an Outpost they created (no permission on it yet).
        return request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return request.user.is_superuser

    def get_fieldsets(self, request: HttpRequest, obj: Model | None = None) -> list[Any]:
        fieldsets = list(super().get_fieldsets(request, obj))
        if request.user.is_superuser:
            fieldsets.append(("Site admins", {"fields": ["site_admins"]}))
        return fieldsets

    def get_form(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, **kwargs)
        if not request.user.is_superuser:
            # A new form class per call: this leaves the picker out for this request only.
            form.base_fields.pop("site_admins", None)
        return form

    def get_inlines(self, request: HttpRequest, obj: Model | None) -> list[Any]:
        # Policies and rules name flavors, which a new Outpost has yet to have saved.
        return list(self.inlines) if obj is not None else [FlavorInline]

    def save_related(
        self, request: HttpRequest, form: OutpostForm, formsets: list[Any], change: bool
    ) -> None:
        super().save_related(request, form, formsets, change)
        if request.user.is_superuser and "site_admins" in form.cleaned_data:
            outpost_site_admins_set(outpost=form.instance, users=form.cleaned_data["site_admins"])
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
        # Before the model's own URLs: "<path:object_id>/" would take "capacity/" as an id.
        capacity = path(
            "capacity/",
            self.admin_site.admin_view(self.capacity_view),
            name="outposts_outpost_capacity",
        )
        usage = path(
            "usage/",
            self.admin_site.admin_view(self.usage_view),
            name="outposts_outpost_usage",
        )
        trial = path(
            "<path:object_id>/trials/<int:trial_id>/",
            self.admin_site.admin_view(self.trial_view),
            name="outposts_outpost_trial",
        )
        return [capacity, usage, trial, preview, *super().get_urls()]

    def usage_view(self, request: HttpRequest) -> TemplateResponse:
        """Flavor-hours of the Outposts the user administers (superusers: all), as a table
        and a chart of the same figures; the form's query also fetches them as CSV."""
        if not administers_any(request):
            raise PermissionDenied
        query = request.GET
        if not {"from", "to", "by"} & set(query):
            # A first visit: this month so far, per Outpost and flavor.
            today = timezone.localdate()
            query = QueryDict(mutable=True)
            query.update({"from": today.replace(day=1).isoformat(), "to": today.isoformat()})
            query.setlist("by", ["outpost", "flavor"])
        form = UsageForm(query)
        report = chart = None
        csv_url = ""
        if form.is_valid():
            start, end = form.range()
            report = usage_report(
                servers=Server.objects.filter(
                    outpost__in=outposts_administered_by(user=request.user)
                ),
                start=start,
                end=end,
                by=form.cleaned_data["by"],
            )
            chart = usage_chart(report=report)
            csv_url = f"{reverse('usage-csv')}?{query.urlencode()}"
        context = {
            **self.admin_site.each_context(request),
            "title": "Usage",
            "opts": self.opts,
            "form": form,
            "report": report,
            "chart": chart,
            "csv_url": csv_url,
        }
        return TemplateResponse(request, "admin/outposts/outpost/usage.html", context)

    def capacity_view(self, request: HttpRequest) -> TemplateResponse:
        """The capacity dashboard of the Outposts the user administers (superusers: all)."""
        if not administers_any(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": "Capacity",
            "opts": self.opts,
            "overview": capacity_overview(outposts=outposts_administered_by(user=request.user)),
        }
        return TemplateResponse(request, "admin/outposts/outpost/capacity.html", context)

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
