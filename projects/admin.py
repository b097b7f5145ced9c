"""The project admin.

A project manager (``projects.manage_project`` on the project, django-guardian) sees only
their projects. Each has a page written for them (``project_view``): the allocation and what
of it is in use, the members, the grants, and forms to add and remove members and to grant and
revoke flavors of the allocation. The project itself (name, Outpost, allocation, managers) is
for the administrators of its Outpost (and superusers), on the model's change form. Managers see
nothing else of the admin: they administer no Outpost (outposts/admin/scoping.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.admin.widgets import FilteredSelectMultiple
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from flavors.models import Flavor
from outposts.admin.scoping import administers, administers_any
from outposts.selectors import outposts_administered_by
from portal.permissions import cached_per_request
from projects.forms import GrantForm, MemberAddForm
from projects.models import Allocation, Grant, Member, Project
from projects.selectors import project_managers, project_page, projects_managed_by
from projects.services import (
    grant_flavor,
    grant_revoke,
    member_add,
    member_remove,
    project_managers_set,
)


@cached_per_request
def managed_project_ids(request: HttpRequest) -> set[int]:
    return set(projects_managed_by(user=request.user).values_list("pk", flat=True))


def manages(request: HttpRequest, project: Project) -> bool:
    return project.pk in managed_project_ids(request)


class AllocationInline(admin.TabularInline):
    """What the project was allocated: set by the Outpost's administrators only."""

    model = Allocation
    fields = ["flavor", "max_servers", "hours_per_month"]
    extra = 0

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return obj is None or administers(request, obj.outpost_id)

    has_change_permission = has_add_permission = has_delete_permission = has_view_permission

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)
        formset.form.base_fields["flavor"].queryset = Flavor.objects.filter(
            outpost=getattr(obj, "outpost", None)
        )
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
    list_display = ["name", "outpost", "description", "members_and_grants"]
    list_filter = [("outpost", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["name", "description"]
    inlines = [AllocationInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Project]:
        return projects_managed_by(user=request.user).select_related("outpost")

    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(managed_project_ids(request)) or administers_any(request)

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        if obj is None:
            return self.has_module_permission(request)
        return manages(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        # The project itself (name, allocation, managers) is its Outpost's administrators';
        # its managers work on its page of members and grants (project_view).
        return administers(request, obj.outpost_id) if obj else administers_any(request)

    has_delete_permission = has_change_permission

    def has_add_permission(self, request: HttpRequest) -> bool:
        return administers_any(request)

    @admin.display(description="members and grants")
    def members_and_grants(self, project: Project) -> str:
        return format_html(
            '<a href="{}">Members and grants</a>',
            reverse("admin:projects_project_members", args=[project.pk]),
        )

    def get_urls(self) -> list[URLPattern]:
        members = path(
            "<path:object_id>/members/",
            self.admin_site.admin_view(self.project_view),
            name="projects_project_members",
        )
        return [members, *super().get_urls()]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        project = self.get_object(request, unquote(object_id))
        if project is not None and not administers(request, project.outpost_id):
            return redirect("admin:projects_project_members", project.pk)
        return super().change_view(request, object_id, form_url, extra_context)

    def project_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """A project's page for its managers: its allocation and use, its members and grants,
        and the forms that add and remove members and grant and revoke flavors."""
        project = self.get_object(request, unquote(object_id))
        if project is None:
            raise Http404("No such project, or not one you manage.")
        member_form = MemberAddForm(project=project)
        grant_form = GrantForm(project=project)
        if request.method == "POST":
            action = request.POST.get("action")
            if action == "add-member":
                member_form = MemberAddForm(request.POST, project=project)
                if self._saved(request, member_form, lambda data: self._add_member(project, data)):
                    return redirect(request.path)
            elif action == "grant":
                grant_form = GrantForm(request.POST, project=project)
                if self._saved(
                    request, grant_form, lambda data: self._grant(request, project, data)
                ):
                    return redirect(request.path)
            elif action == "remove-member":
                member = get_object_or_404(Member, project=project, pk=request.POST.get("id"))
                member_remove(member=member)
                messages.success(request, f"Removed {member} and their grants.")
                return redirect(request.path)
            elif action == "revoke":
                grant = get_object_or_404(Grant, project=project, pk=request.POST.get("id"))
                grant_revoke(grant=grant)
                messages.success(request, f"Revoked: {grant}.")
                return redirect(request.path)
            else:
                return HttpResponseBadRequest("Unknown action.")
        context = {
            **self.admin_site.each_context(request),
            "title": f"Project {project.name}",
            "opts": self.opts,
            "original": project,
            "page": project_page(project=project),
            "member_form": member_form,
            "grant_form": grant_form,
            "can_change_project": administers(request, project.outpost_id),
            "usage_url": reverse("usage-csv") + "?by=project,user,flavor",
        }
        return TemplateResponse(request, "admin/projects/project/members.html", context)

    @staticmethod
    def _saved(
        request: HttpRequest, form: forms.Form, save: Callable[[dict[str, Any]], str]
    ) -> bool:
        """Save a valid ``form`` with ``save``, which returns the success message; a refusal
        (ValidationError) goes onto the form, to be shown beside what was entered."""
        if not form.is_valid():
            return False
        try:
            message = save(form.cleaned_data)
        except ValidationError as refusal:
            form.add_error(None, refusal)
            return False
        messages.success(request, message)
        return True

    @staticmethod
    def _add_member(project: Project, data: dict[str, Any]) -> str:
        member = member_add(project=project, hub=data["hub"], user_name=data["user_name"])
        return f"Added {member} to {project.name}."

    @staticmethod
    def _grant(request: HttpRequest, project: Project, data: dict[str, Any]) -> str:
        grant, created = grant_flavor(
            project=project,
            member=data["member"],
            flavor=data["flavor"],
            expires_at=data["expires_at"],
            granted_by=request.user,
        )
        until = f" until {grant.expires_at:%Y-%m-%d %H:%M} UTC" if grant.expires_at else ""
        return f"{'Granted' if created else 'Renewed'}: {grant}{until}."

    def get_fields(self, request: HttpRequest, obj: Model | None = None) -> list[str]:
        return ["outpost", "name", "description", "managers"]

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> list[str]:
        # Its allocation, members and grants are its Outpost's: the Outpost stays.
        return ["outpost"] if obj is not None else []

    def get_inlines(self, request: HttpRequest, obj: Model | None) -> list[Any]:
        # Allocations name flavors of the project's Outpost: saved first.
        return list(self.inlines) if obj is not None else []

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "outpost":
            kwargs["queryset"] = outposts_administered_by(user=request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        project_managers_set(project=form.instance, users=form.cleaned_data["managers"])
