"""The flavor answer of ``GET flavors/`` and ``POST userflavors`` (api-contract §4), which is
also the body of the flavor-update call-back to a Hub."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rest_framework import serializers

from flavors.models import runtime_as_wire
from flavors.selectors import FlavorInUse


class UnlimitedAsMinusOne(serializers.IntegerField):
    """The wire's -1 for "no limit", where the model says None."""

    def get_attribute(self, instance: Any) -> int:
        # Here, not in to_representation: DRF renders a None attribute as null unasked.
        value = super().get_attribute(instance)
        return -1 if value is None else value


class FlavorSerializer(serializers.Serializer):
    """One flavor of the answer; ``runtime`` is left out for a flavor without one."""

    display_name = serializers.CharField(source="flavor.display_name")
    description = serializers.CharField(source="flavor.description")
    weight = serializers.IntegerField(source="flavor.weight")
    max = UnlimitedAsMinusOne(
        help_text="What this Hub may have at once: of the flavor's max and the Hub's own cap, "
        "the one with least room; -1 = unlimited"
    )
    maxPerUser = UnlimitedAsMinusOne(source="flavor.max_per_user", help_text="-1 = unlimited")  # noqa: N815 - the wire's name
    runtime = serializers.SerializerMethodField(help_text='e.g. {"hours": 2}; absent = none')
    resources = serializers.DictField(source="flavor.resources")
    current = serializers.IntegerField(
        help_text="Active servers counted against max: max - current is what the Hub may "
        "still start now."
    )
    currentPerUser = serializers.IntegerField(  # noqa: N815 - the wire's style
        source="active_of_user",
        required=False,
        help_text="The user's own active servers of the flavor (userflavors?user_id=...).",
    )

    def get_runtime(self, listed: FlavorInUse) -> dict[str, int] | None:
        return runtime_as_wire(listed.flavor.runtime)

    def to_representation(self, instance: FlavorInUse) -> dict[str, Any]:
        answer = super().to_representation(instance)
        for optional in ("runtime", "currentPerUser"):
            if answer.get(optional) is None:
                answer.pop(optional, None)
        return answer


def flavors_answer(listing: Iterable[FlavorInUse]) -> dict[str, dict[str, Any]]:
    """The answer: a JSON object keyed by flavor name."""
    return {listed.flavor.name: FlavorSerializer(listed).data for listed in listing}
