"""Reads of flavors: what a Hub (and one of its users) may use, with how many are active."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db.models import Count, Q

from flavors.models import Flavor
from flavors.resolution import EffectiveFlavor, flavors_resolve
from outposts.models import Server

if TYPE_CHECKING:
    from outposts.models import Hub, Outpost


@dataclass(frozen=True)
class FlavorInUse:
    """A flavor as resolved for a Hub's user, and its active servers over all Hubs."""

    flavor: EffectiveFlavor
    current: int


def flavor_list_for_hub(
    *, hub: Hub, outpost: Outpost, authentication: Mapping[str, Any] | None = None
) -> list[FlavorInUse]:
    """The flavors ``hub`` (and the user ``authentication`` describes) may use on
    ``outpost``, highest weight first, as flavors/resolution.py decides.

    One query however many flavors and servers there are.
    """
    rows = Flavor.objects.filter(outpost=outpost).annotate(
        current=Count("servers", filter=~Q(servers__status__in=Server.ENDED))
    )
    current = {row.pk: row.current for row in rows}
    resolution = flavors_resolve(
        outpost=outpost, flavors=rows, hub=hub, authentication=authentication
    )
    return [FlavorInUse(flavor, current[flavor.flavor_id]) for flavor in resolution.flavors]
