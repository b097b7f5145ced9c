"""Admission: which flavor a start gets, and whether the caps leave room for it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import transaction

from flavors.models import Flavor
from outposts.errors import StartRefused

if TYPE_CHECKING:
    from outposts.models import Hub, Outpost


def flavor_admit(
    *, hub: Hub, outpost: Outpost, flavor_name: str | None, server_name: str, user_id: str
) -> Flavor | None:
    """The flavor a start of ``user_id`` gets, after checking every cap.

    Must run inside the transaction that inserts the server, with the Outpost row locked
    (server_start does both), so concurrent starts are counted one after another and can never
    overbook. Without a flavor name, the highest-weighted flavor is used; an Outpost without
    flavors admits everything up to its per-user limit. Raises StartRefused with the
    contract's messages.
    """
    from outposts.models import Server

    assert transaction.get_connection().in_atomic_block, "flavor_admit needs a transaction"
    active = Server.objects.active().filter(outpost=outpost)

    if outpost.max_servers_per_user is not None:
        user_count = active.filter(hub=hub, user_id=user_id).count()
        if user_count >= outpost.max_servers_per_user:
            raise StartRefused(
                f"{server_name} - User with user id {user_id} of {hub.name} has reached the "
                f"maximum limit of services ({outpost.max_servers_per_user})"
            )

    flavors = list(outpost.flavors.all())
    if not flavors:
        if flavor_name:
            raise StartRefused(
                f"{server_name} - Start with flavor {flavor_name} not allowed. "
                "Allowed values for user: []"
            )
        return None
    if not flavor_name:
        flavor = flavors[0]  # ordered by weight, highest first
    else:
        by_name = {candidate.name: candidate for candidate in flavors}
        if flavor_name not in by_name:
            raise StartRefused(
                f"{server_name} - Start with flavor {flavor_name} not allowed. "
                f"Allowed values for user: {sorted(by_name)}"
            )
        flavor = by_name[flavor_name]

    of_flavor = active.filter(flavor=flavor)
    if flavor.max is not None and of_flavor.count() >= flavor.max:
        raise StartRefused(
            f"{server_name} - Start with {flavor.name} for {hub.name} not allowed. "
            f"Maximum ({flavor.max}) already reached."
        )
    if (
        flavor.max_per_user is not None
        and of_flavor.filter(hub=hub, user_id=user_id).count() >= flavor.max_per_user
    ):
        raise StartRefused(
            f"{server_name} - Start with flavor {flavor.name} not allowed. "
            f"Each user may only start {flavor.max_per_user} of {flavor.name}"
        )
    return flavor
