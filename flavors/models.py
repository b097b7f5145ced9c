"""Flavors: the resource sizes an Outpost offers, with their caps and runtimes."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.db import models

from flavors.matching import attributes_problems
from outposts import spawner_settings

if TYPE_CHECKING:
    from outposts.models import Outpost


def runtime_as_wire(runtime: timedelta | None) -> dict[str, int] | None:
    """A runtime as the wire carries it: {"hours": 2}, {"hours": 1, "minutes": 30}."""
    if runtime is None:
        return None
    seconds = int(runtime.total_seconds())
    parts: dict[str, int] = {}
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60), ("seconds", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts[unit] = count
    return parts


class Flavor(models.Model):
    """A resource size on one Outpost: caps on concurrent servers, a runtime, trait overrides."""

    # What an admin sets, in the order forms show it: the admin and apply_config use these.
    SETTINGS = (
        "name",
        "display_name",
        "description",
        "weight",
        "max",
        "max_per_user",
        "runtime",
        "resources",
    )

    # Servers keep their flavor as history (Server.flavor is PROTECT): the admin says this
    # when a used flavor is to be deleted, as apply_config does when it closes one.
    CLOSE_INSTEAD_OF_DELETE = (
        "Servers ran on this flavor and their records keep it, so it cannot be deleted. "
        "To take it out of use, close it instead: set its max to 0. No new server can start "
        "on it, and its running servers go on until they end."
    )

    outpost = models.ForeignKey(
        "outposts.Outpost", on_delete=models.CASCADE, related_name="flavors"
    )
    name = models.SlugField(max_length=100, help_text="The name Hubs send as user_options.flavor.")
    display_name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    weight = models.IntegerField(default=0, help_text="Higher weights are listed first.")
    max = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Active servers of this flavor over all Hubs; empty = unlimited, 0 = closed.",
    )
    max_per_user = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Active servers of this flavor per Hub user; empty = unlimited.",
    )
    runtime = models.DurationField(
        null=True, blank=True, help_text="A server is stopped this long after it became ready."
    )
    resources = models.JSONField(
        default=dict,
        blank=True,
        help_text='Spawner trait overrides, e.g. {"mem_limit": "2G", "cpu_limit": 1}.',
    )

    class Meta:
        ordering = ["outpost", "-weight", "name"]
        constraints = [
            models.UniqueConstraint(fields=["outpost", "name"], name="unique_flavor_per_outpost")
        ]

    def __str__(self) -> str:
        return f"{self.display_name} ({self.name})"

    def clean(self) -> None:
        if not isinstance(self.resources, dict):
            raise ValidationError({"resources": "Must be a JSON object of trait names to values."})
        problems = resources_problems(outpost=_outpost_of(self), resources=self.resources)
        if problems:
            raise ValidationError({"resources": problems})
        if self.runtime is not None and self.runtime <= timedelta(0):
            raise ValidationError({"runtime": "Must be positive, or empty for no limit."})


def _outpost_of(row: Flavor | HubPolicy | UserRule) -> Outpost | None:
    """The row's Outpost, also an unsaved one (an admin inline of a new Outpost); or None."""
    try:
        return row.outpost
    except ObjectDoesNotExist:
        return None


def resources_problems(*, outpost: Outpost | None, resources: dict[str, Any]) -> list[str]:
    """What the Outpost's spawner class refuses of flavor ``resources`` (trait values the
    runner applies over the Outpost's): the one rule is outposts/spawner_settings.py."""
    if outpost is None:
        return []
    return spawner_settings.trait_values_problems_of(
        spawner_class=outpost.spawner_class, values=resources
    )


# What a Hub policy or a user rule may change of a flavor, and how each value is checked.
# Absent = keep the value of the layer below; runtime as the wire carries it ({"hours": 2});
# max_per_user null = unlimited.
OVERRIDABLE = ("display_name", "description", "weight", "runtime", "max_per_user", "resources")
_RUNTIME_UNITS = ("weeks", "days", "hours", "minutes", "seconds")


def runtime_from_wire(value: Any) -> timedelta:
    """A runtime from its wire shape ({"hours": 2}); ValueError for anything else."""
    if not isinstance(value, dict) or not value:
        raise ValueError('a runtime is an object of units, e.g. {"hours": 2}')
    unknown = sorted(set(value) - set(_RUNTIME_UNITS))
    if unknown:
        raise ValueError(f"unknown runtime units {unknown}; use {list(_RUNTIME_UNITS)}")
    if not all(isinstance(n, int | float) and not isinstance(n, bool) for n in value.values()):
        raise ValueError("runtime units must be numbers")
    runtime = timedelta(**value)
    if runtime <= timedelta(0):
        raise ValueError("a runtime must be positive")
    return runtime


def overrides_problems(overrides: Any, *, outpost: Outpost | None = None) -> list[str]:
    """What is wrong with one flavor's overrides (an object of OVERRIDABLE fields); with
    ``outpost``, also the resources its spawner class refuses."""
    if not isinstance(overrides, dict):
        return ["must be a JSON object of flavor fields to values"]
    problems = [
        f"{key!r} cannot be overridden; allowed: {', '.join(OVERRIDABLE)}"
        for key in overrides
        if key not in OVERRIDABLE
    ]
    for key in ("display_name", "description"):
        if key in overrides and not isinstance(overrides[key], str):
            problems.append(f"{key} must be text")
    if "weight" in overrides and (
        not isinstance(overrides["weight"], int) or isinstance(overrides["weight"], bool)
    ):
        problems.append("weight must be a whole number")
    if "runtime" in overrides:
        try:
            runtime_from_wire(overrides["runtime"])
        except ValueError as error:
            problems.append(str(error))
    if "max_per_user" in overrides:
        value = overrides["max_per_user"]
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 0
        ):
            problems.append("max_per_user must be a number of servers, or null for unlimited")
    if "resources" in overrides and not isinstance(overrides["resources"], dict):
        problems.append("resources must be a JSON object of trait names to values")
    elif "resources" in overrides:
        problems += [
            f"resources: {problem}"
            for problem in resources_problems(outpost=outpost, resources=overrides["resources"])
        ]
    return problems


class HubPolicy(models.Model):
    """What one Hub may have of one flavor: whether it may use it at all, its own cap (its
    share of the flavor's ``max``) and overrides of the flavor's settings for its users.

    A tenant boundary (flavors/resolution.py): a Hub with policy rows on an Outpost may use
    only the flavors whose row allows it; nothing below (user rules, grants) can widen that.
    A Hub with no rows on an Outpost may use all of its flavors.
    """

    outpost = models.ForeignKey(
        "outposts.Outpost", on_delete=models.CASCADE, related_name="hub_policies"
    )
    hub = models.ForeignKey("outposts.Hub", on_delete=models.CASCADE, related_name="policies")
    flavor = models.ForeignKey(Flavor, on_delete=models.CASCADE, related_name="hub_policies")
    allowed = models.BooleanField(
        default=True,
        help_text="Off: the Hub may not use this flavor. Once a Hub has a policy on this "
        "Outpost, a flavor without an allowed policy is not offered to it.",
    )
    cap = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Active servers of this flavor the Hub may have, its share of the flavor's "
        "max; empty = only the flavor's max applies.",
    )
    overrides = models.JSONField(
        default=dict,
        blank=True,
        help_text='Flavor fields this Hub\'s users get instead, e.g. {"runtime": {"hours": 4}, '
        '"max_per_user": 2, "display_name": "Large (course)"}. Allowed: '
        + ", ".join(OVERRIDABLE)
        + ".",
    )

    class Meta:
        verbose_name = "Hub policy"
        verbose_name_plural = "Hub policies"
        ordering = ["outpost", "hub__name", "-flavor__weight", "flavor__name"]
        constraints = [
            models.UniqueConstraint(fields=["hub", "flavor"], name="one_policy_per_hub_and_flavor")
        ]

    def __str__(self) -> str:
        verdict = "may use" if self.allowed else "may not use"
        return f"{self.hub.name} {verdict} {self.flavor.name}"

    def clean(self) -> None:
        errors: dict[str, Any] = {}
        if self.flavor_id and self.outpost_id and self.flavor.outpost_id != self.outpost_id:
            errors["flavor"] = "Choose a flavor of this Outpost."
        problems = overrides_problems(self.overrides, outpost=_outpost_of(self))
        if problems:
            errors["overrides"] = problems
        if errors:
            raise ValidationError(errors)


class UserRule(models.Model):
    """Which flavors the users of an Outpost get, by the attributes their Hub authenticated
    them with (the start's and userflavors' ``authentication``).

    It matches when any of its attributes does (flavors/matching.py); ``negate`` turns that
    round. Of the rules that match, the one with the highest weight decides, and on a tie the
    one later in the list. It applies on top of the user's Hub policy and never widens it.
    """

    outpost = models.ForeignKey(
        "outposts.Outpost", on_delete=models.CASCADE, related_name="user_rules"
    )
    position = models.PositiveIntegerField(
        default=0, help_text="Order in the list: on equal weights the later rule wins."
    )
    name = models.CharField(max_length=100, help_text="What the rule is for, e.g. hpc-staff.")
    hubs = models.ManyToManyField(
        "outposts.Hub",
        blank=True,
        related_name="user_rules",
        help_text="Only for users of these Hubs; none chosen = users of every Hub.",
    )
    attributes = models.JSONField(
        blank=True,
        default=dict,
        help_text='Authentication attributes to match, e.g. {"groups": ["hpc", "staff"], '
        '"name": "^a.*"}. A text is tried as a regular expression (whole value), then as a '
        "glob, then as equal text; a list matches any value in it. The user's value may be a "
        "text or a list. None: the rule matches nobody, or with negate everybody.",
    )
    negate = models.BooleanField(
        default=False, help_text="The rule applies to the users it does not match."
    )
    weight = models.IntegerField(default=0, help_text="Of matching rules the heaviest decides.")
    forbidden = models.BooleanField(
        default=False, help_text="Users this rule decides for get no flavors at all."
    )
    flavors = models.ManyToManyField(
        Flavor,
        blank=True,
        related_name="user_rules",
        help_text="Only these flavors (of those the Hub may use); none chosen = all of them.",
    )
    overrides = models.JSONField(
        default=dict,
        blank=True,
        help_text='Per flavor name, fields these users get instead, e.g. {"large": {"runtime": '
        '{"hours": 8}}}. Allowed fields: ' + ", ".join(OVERRIDABLE) + ".",
    )

    class Meta:
        ordering = ["outpost", "position", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["outpost", "name"], name="unique_user_rule_name")
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors: dict[str, Any] = {}
        problems = attributes_problems(self.attributes)
        if problems:
            errors["attributes"] = problems
        if not isinstance(self.overrides, dict):
            errors["overrides"] = "Must be a JSON object keyed by flavor name."
        else:
            problems = [
                f"{name}: {problem}"
                for name, fields in self.overrides.items()
                for problem in overrides_problems(fields, outpost=_outpost_of(self))
            ]
            if self.outpost_id:
                known = set(
                    Flavor.objects.filter(outpost_id=self.outpost_id).values_list("name", flat=True)
                )
                problems += [
                    f"{name}: no such flavor on this Outpost"
                    for name in self.overrides
                    if name not in known
                ]
            if problems:
                errors["overrides"] = problems
        if errors:
            raise ValidationError(errors)
