"""Admission: whether a start may have a flavor, decided with the counted rows locked."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import transaction

from flavors.models import Flavor
from flavors.resolution import EffectiveFlavor, flavors_resolve
from outposts.errors import StartRefused
from outposts.models import Server
from outposts.selectors import outpost_for_update

if TYPE_CHECKING:
    from outposts.models import Hub, Outpost


@dataclass(frozen=True)
class Admission:
    """What admission decided for one start: its flavor as resolved (None on an Outpost
    without flavors). The start writes it onto the server in the same transaction."""

    flavor: EffectiveFlavor | None

    @property
    def flavor_id(self) -> int | None:
        return None if self.flavor is None else self.flavor.flavor_id

    @property
    def flavor_settings(self) -> dict[str, Any]:
        return {} if self.flavor is None else self.flavor.frozen_settings()


def flavor_admit(
    *,
    hub: Hub,
    outpost: Outpost,
    flavor_name: str | None,
    server_name: str,
    user_id: str,
    authentication: Mapping[str, Any] | None = None,
) -> Admission:
    """Admit a start of ``user_id`` on ``outpost``, or raise StartRefused with the contract's
    message.

    Locks the Outpost row first: admissions on one Outpost run one after another, so
    concurrent starts can never overbook. The lock lasts until the caller's transaction ends,
    which must also insert the server (server_start does): call it inside one. Without a
    flavor name the highest-weighted flavor is used; an Outpost without flavors admits
    everything up to its per-user limit.
    """
    assert transaction.get_connection().in_atomic_block, "flavor_admit needs a transaction"
    outpost = outpost_for_update(outpost=outpost)
    resolution = flavors_resolve(
        outpost=outpost,
        flavors=Flavor.objects.filter(outpost=outpost),
        hub=hub,
        authentication=authentication,
    )
    if resolution.refusal:
        raise StartRefused(f"{server_name} - {resolution.refusal}")
    active = Server.objects.active().filter(outpost=outpost)

    if outpost.max_servers_per_user is not None:
        user_count = active.filter(hub=hub, user_id=user_id).count()
        if user_count >= outpost.max_servers_per_user:
            raise StartRefused(
                f"{server_name} - User with user id {user_id} of {hub.name} has reached the "
                f"maximum limit of services ({outpost.max_servers_per_user})"
            )

    if not resolution.flavors and not flavor_name:
        return Admission(flavor=None)
    flavor = resolution.named(flavor_name) if flavor_name else resolution.default
    if flavor is None:
        raise StartRefused(
            f"{server_name} - Start with flavor {flavor_name} not allowed. "
            f"Allowed values for user: {resolution.names}"
        )

    of_flavor = active.filter(flavor_id=flavor.flavor_id)
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
    return Admission(flavor=flavor)
