"""Reads of flavors, in the wire shape of GET flavors/."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db.models import Count, Q

from flavors.models import Flavor

if TYPE_CHECKING:
    from outposts.models import Hub, Outpost


def flavor_list_for_hub(*, hub: Hub, outpost: Outpost) -> dict[str, dict[str, Any]]:
    """The flavors ``hub`` may use on ``outpost``, keyed by name, with how many are active.

    One query however many flavors and servers there are. Until Hub policies exist, a Hub
    granted the Outpost may use all of its flavors. A disabled Outpost offers none (a Hub then
    shows no choice for it); a draining one still lists them while its servers wind down.
    """
    from outposts.models import Outpost, Server

    if outpost.state == Outpost.State.DISABLED:
        return {}
    flavors = Flavor.objects.filter(outpost=outpost).annotate(
        current=Count("servers", filter=~Q(servers__status__in=Server.ENDED))
    )
    return {flavor.name: flavor_as_wire(flavor, current=flavor.current) for flavor in flavors}


def flavor_as_wire(flavor: Flavor, *, current: int) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "display_name": flavor.display_name,
        "description": flavor.description,
        "weight": flavor.weight,
        "max": -1 if flavor.max is None else flavor.max,
        "maxPerUser": -1 if flavor.max_per_user is None else flavor.max_per_user,
        "resources": flavor.resources,
        "current": current,
    }
    if flavor.runtime is not None:
        wire["runtime"] = flavor.runtime_wire
    return wire
