"""The project admin: a project's page with its members and grants, for its managers.

A project manager (``projects.manage_project`` on the project, django-guardian) sees only
their projects, and there adds and removes members and grants and revokes flavors of the
project's allocation. The allocation, the project's Outpost and who manages it are for the
administrators of that Outpost (and superusers), who also pick the managers on the same page.
Managers see nothing else of the admin: they administer no Outpost (outposts/admin/scoping.py).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.widgets import FilteredSelectMultiple
from django.contrib.auth import get_user_model
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from flavors.models import Flavor
from outposts.admin.scoping import administers, administers_any
from outposts.models import Hub
from outposts.selectors import outposts_administered_by
from projects.models import Allocation, Grant, Member, Project
from projects.selectors import project_managers, projects_managed_by
from projects.services import grant_record_granter, project_managers_set


def managed_project_ids(request: HttpRequest) -> set[int]:
    # Cached on the request: every admin page asks (its navigation lists the apps).
    cached: set[int] | None = getattr(request, "_managed_project_ids", None)
    if cached is None:
        cached = set(projects_managed_by(user=request.user).values_list("pk", flat=True))
        request._managed_project_ids = cached  # type: ignore[attr-defined]
    return cached


def manages(request: HttpRequest, project: Project) -> bool:
    return project.pk in managed_project_ids(request)


class ProjectPartInline(admin.TabularInline):
    """Rows of the project being edited, for whoever may manage it."""

    extra = 0

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return obj is None or manages(request, obj)

    has_change_permission = has_add_permission = has_delete_permission = has_view_permission


class AllocationInline(ProjectPartInline):
    model = Allocation
    fields = ["flavor", "max_servers"]

    # Only the Outpost's administrators decide what a project was allocated.
    def _admin_of(self, request: HttpRequest, obj: Model | None) -> bool:
        return obj is None or administers(request, obj.outpost_id)

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._admin_of(request, obj)

    has_add_permission = has_delete_permission = has_change_permission

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)
        if "flavor" in formset.form.base_fields:
            formset.form.base_fields["flavor"].queryset = Flavor.objects.filter(
                outpost=getattr(obj, "outpost", None)
            )
        return formset


class MemberInline(ProjectPartInline):
    model = Member
    fields = ["hub", "user_name"]

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)
        # Members come from the Hubs that may use the project's Outpost.
        hubs = Hub.objects.filter(outposts=obj.outpost) if obj else Hub.objects.none()
        formset.form.base_fields["hub"].queryset = hubs.order_by("name")
        return formset


class GrantInline(ProjectPartInline):
    model = Grant
    fields = ["member", "flavor", "expires_at", "granted_by", "granted_at"]
    readonly_fields = ["granted_by", "granted_at"]
    verbose_name_plural = "grants (only flavors of the project's allocation)"

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)
        fields = formset.form.base_fields
        fields["member"].queryset = Member.objects.filter(project=obj)
        fields["flavor"].queryset = Flavor.objects.filter(allocations__project=obj)
        return formset


class ProjectForm(forms.ModelForm):
    managers = forms.ModelMultipleChoiceField(
        queryset=get_user_model().objects.filter(is_staff=True, is_active=True),
        required=False,
        widget=FilteredSelectMultiple("managers", is_stacked=False),
        help_text="Staff users who manage this project: they see it, and only it, in the "
        "admin, and add members and grant them flavors of its allocation.",
    )

    class Meta:
        model = Project
        fields = ["outpost", "name", "description"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and "managers" in self.fields:
            self.fields["managers"].initial = list(project_managers(project=self.instance))


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    form = ProjectForm
    list_display = ["name", "outpost", "description"]
    list_filter = [("outpost", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["name", "description"]
    inlines = [AllocationInline, MemberInline, GrantInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Project]:
        return projects_managed_by(user=request.user).select_related("outpost")

    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(managed_project_ids(request)) or administers_any(request)

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        if obj is None:
            return self.has_module_permission(request)
        return manages(request, obj)

    has_change_permission = has_view_permission

    def has_add_permission(self, request: HttpRequest) -> bool:
        return administers_any(request)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return administers(request, obj.outpost_id) if obj else administers_any(request)

    def get_fields(self, request: HttpRequest, obj: Model | None = None) -> list[str]:
        if obj is None or administers(request, obj.outpost_id):
            return ["outpost", "name", "description", "managers"]
        return ["outpost", "name", "description"]

    def get_form(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, **kwargs)
        if obj is not None and not administers(request, obj.outpost_id):
            # Each call makes a new form class: this leaves the managers out for this request.
            form.base_fields.pop("managers", None)
        return form

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> list[str]:
        if obj is None:
            return []
        if administers(request, obj.outpost_id):
            return ["outpost"]  # its allocations, members and grants are that Outpost's
        return ["outpost", "name", "description"]

    def get_inlines(self, request: HttpRequest, obj: Model | None) -> list[Any]:
        # Allocations name flavors of the project's Outpost: saved first.
        return list(self.inlines) if obj is not None else []

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "outpost":
            kwargs["queryset"] = outposts_administered_by(user=request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        for grant_form in formset.forms:
            if isinstance(grant_form.instance, Grant) and grant_form.has_changed():
                grant_record_granter(grant=grant_form.instance, user=request.user)
        super().save_formset(request, form, formset, change)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        if "managers" in form.cleaned_data and administers(request, form.instance.outpost_id):
            project_managers_set(project=form.instance, users=form.cleaned_data["managers"])
