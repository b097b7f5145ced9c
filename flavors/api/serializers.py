"""The flavor answer of ``GET flavors/`` and ``POST userflavors`` (api-contract §4), which is
also the body of the flavor-update call-back to a Hub."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rest_framework import serializers

from flavors.models import runtime_as_wire
from flavors.selectors import FlavorInUse


class FlavorSerializer(serializers.Serializer):
    """One flavor of the answer; ``runtime`` is left out for a flavor without one."""

    display_name = serializers.CharField(source="flavor.display_name")
    description = serializers.CharField(source="flavor.description")
    weight = serializers.IntegerField(source="flavor.weight")
    max = serializers.IntegerField(
        help_text="What this Hub may have at once: of the flavor's max and the Hub's own cap, "
        "the one with least room; -1 = unlimited"
    )
    maxPerUser = serializers.IntegerField(source="flavor.max_per_user", help_text="-1 = unlimited")  # noqa: N815 - the wire's name
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
        # Built here, in the fields' order, rather than field by field: DRF copies every
        # field of a serializer before it reads the first, which cost more than reading the
        # flavors (bench/README.md). The fields above are the schema's.
        flavor = instance.flavor
        answer: dict[str, Any] = {
            "display_name": flavor.display_name,
            "description": flavor.description,
            "weight": flavor.weight,
            "max": _or_minus_one(instance.max),
            "maxPerUser": _or_minus_one(flavor.max_per_user),
        }
        runtime = self.get_runtime(instance)
        if runtime is not None:
            answer["runtime"] = runtime
        answer["resources"] = dict(flavor.resources)
        answer["current"] = instance.current
        if instance.active_of_user is not None:
            answer["currentPerUser"] = instance.active_of_user
        return answer


def _or_minus_one(limit: int | None) -> int:
    return -1 if limit is None else limit


def flavors_answer(listing: Iterable[FlavorInUse]) -> dict[str, dict[str, Any]]:
    """The answer: a JSON object keyed by flavor name."""
    serializer = FlavorSerializer()
    return {listed.flavor.name: serializer.to_representation(listed) for listed in listing}
