"""Reads of flavors: what a Hub (and one of its users) may use, with how many are active."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db.models import Count, Q, QuerySet

from flavors.models import Flavor, HubPolicy, UserRule
from flavors.resolution import (
    EffectiveFlavor,
    Layers,
    PolicyTerms,
    Resolution,
    RuleTerms,
    flavors_resolve,
)
from outposts.models import Server
from projects.selectors import project_terms

if TYPE_CHECKING:
    from outposts.models import Hub, Outpost


@dataclass(frozen=True)
class FlavorInUse:
    """A flavor as resolved for a Hub's user, with its active servers: over all Hubs, of
    this Hub, and of the user (when asked for one)."""

    flavor: EffectiveFlavor
    active: int
    active_of_hub: int
    active_of_user: int | None = None

    def _limits(self) -> list[tuple[int, int]]:
        # The Hub's cap first: on equal room it is the one the Hub sees.
        limits = []
        if self.flavor.hub_cap is not None:
            limits.append((self.flavor.hub_cap, self.active_of_hub))
        if self.flavor.max is not None:
            limits.append((self.flavor.max, self.active))
        return limits

    @property
    def max(self) -> int | None:
        """The Hub's effective cap: of the flavor's max and the Hub's own cap, the one with
        the least room left; None when neither is set."""
        limits = self._limits()
        return min(limits, key=lambda limit: limit[0] - limit[1])[0] if limits else None

    @property
    def current(self) -> int:
        """What counts against ``max``: so ``max - current`` is what the Hub may still start."""
        limits = self._limits()
        if not limits:
            return self.active
        return min(limits, key=lambda limit: limit[0] - limit[1])[1]


def flavor_layers(
    *, hub: Hub, outpost: Outpost, project: str | None = None, user_name: str = ""
) -> Layers:
    """The Hub's policies on ``outpost``, the Outpost's user rules and, when a request names
    one, the ``project`` as Hub user ``user_name`` may use it, for flavors_resolve."""
    policies = HubPolicy.objects.filter(hub=hub, outpost=outpost).values_list(
        "flavor_id", "allowed", "cap", "overrides"
    )
    rules = UserRule.objects.filter(outpost=outpost).prefetch_related("hubs", "flavors")
    return Layers(
        policies=tuple(PolicyTerms(*row) for row in policies),
        rules=tuple(
            RuleTerms(
                name=rule.name,
                attributes=rule.attributes,
                negate=rule.negate,
                weight=rule.weight,
                forbidden=rule.forbidden,
                hub_ids=frozenset(hub.pk for hub in rule.hubs.all()),
                flavor_ids=frozenset(flavor.pk for flavor in rule.flavors.all()),
                overrides=rule.overrides,
            )
            for rule in rules
        ),
        project=None
        if not project
        else project_terms(hub=hub, outpost=outpost, name=project, user_name=user_name),
    )


def flavor_resolution(
    *,
    hub: Hub,
    outpost: Outpost,
    authentication: Mapping[str, Any] | None = None,
    project: str | None = None,
    user_name: str = "",
    flavors: QuerySet[Flavor] | None = None,
) -> Resolution:
    """flavors_resolve over the rows of the database."""
    return flavors_resolve(
        outpost=outpost,
        flavors=Flavor.objects.filter(outpost=outpost) if flavors is None else flavors,
        hub=hub,
        layers=flavor_layers(hub=hub, outpost=outpost, project=project, user_name=user_name),
        authentication=authentication,
        user_name=user_name,
    )


def flavor_list_for_hub(
    *,
    hub: Hub,
    outpost: Outpost,
    authentication: Mapping[str, Any] | None = None,
    user_id: str | None = None,
    project: str | None = None,
) -> list[FlavorInUse]:
    """The flavors ``hub`` (and the user ``authentication`` describes) may use on
    ``outpost``, highest weight first, as flavors/resolution.py decides; with ``user_id``
    also how many servers of each that Hub user has; with ``project`` what that project's
    grants give the user ``authentication["name"]``.

    The counts are one query however many flavors and servers there are.
    """
    active = ~Q(servers__status__in=Server.ENDED)
    of_hub = active & Q(servers__hub=hub)
    rows = Flavor.objects.filter(outpost=outpost).annotate(
        active=Count("servers", filter=active),
        active_of_hub=Count("servers", filter=of_hub),
        active_of_user=Count("servers", filter=of_hub & Q(servers__user_id=user_id or "")),
    )
    counts = {row.pk: row for row in rows}
    resolution = flavor_resolution(
        hub=hub,
        outpost=outpost,
        authentication=authentication,
        project=project,
        user_name=str((authentication or {}).get("name") or ""),
        flavors=rows,
    )
    return [
        FlavorInUse(
            flavor,
            active=counts[flavor.flavor_id].active,
            active_of_hub=counts[flavor.flavor_id].active_of_hub,
            active_of_user=None if user_id is None else counts[flavor.flavor_id].active_of_user,
        )
        for flavor in resolution.flavors
    ]
