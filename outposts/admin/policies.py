"""Hub policies and user rules, edited as inlines on their Outpost's page, and the form of the
"who can use what" preview. Their choices are the Outpost's own flavors and Hubs.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django.http import HttpRequest

from flavors.models import Flavor, HubPolicy, UserRule
from outposts.admin.scoping import OutpostPartInline
from outposts.models import Hub, Outpost, Server


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
