"""Flavors: the resource sizes an Outpost offers, with their caps and runtimes."""

from __future__ import annotations

from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import models


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
        if self.runtime is not None and self.runtime <= timedelta(0):
            raise ValidationError({"runtime": "Must be positive, or empty for no limit."})
