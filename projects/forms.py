"""The forms of a project's page: add a member, grant a flavor of the allocation."""

from __future__ import annotations

from typing import Any

from django import forms

from flavors.models import Flavor
from outposts.models import Hub
from projects.models import Member, Project


class FlavorChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Flavor) -> str:
        return f"{obj.display_name or obj.name} ({obj.name})"


class MemberAddForm(forms.Form):
    hub = forms.ModelChoiceField(queryset=Hub.objects.none(), empty_label=None)
    user_name = forms.CharField(
        label="Hub user name", max_length=255, help_text="The user's name on that Hub."
    )

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        super().__init__(*args, prefix="member", **kwargs)
        # Members come from the Hubs that may use the project's Outpost.
        self.fields["hub"].queryset = Hub.objects.filter(outposts=project.outpost).order_by("name")


class GrantForm(forms.Form):
    member = forms.ModelChoiceField(queryset=Member.objects.none())
    flavor = FlavorChoiceField(queryset=Flavor.objects.none())
    expires_at = forms.DateTimeField(
        label="Expires",
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text="Empty: until revoked. Granting a flavor the member has sets its new expiry.",
    )

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        super().__init__(*args, prefix="grant", **kwargs)
        self.fields["member"].queryset = project.members.select_related("hub")
        # Only flavors of the allocation: a grant of anything else could never be used.
        flavor = self.fields["flavor"]
        flavor.queryset = Flavor.objects.filter(allocations__project=project).order_by("name")
        flavor.error_messages["invalid_choice"] = (
            f"Project {project.name} has no allocation of that flavor: only flavors of its "
            "allocation can be granted. Its Outpost's administrators set the allocation."
        )
        self.fields["member"].error_messages["invalid_choice"] = (
            f"Choose a member of project {project.name}."
        )
