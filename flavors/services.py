"""Admission: whether a start may have a flavor, decided with the counted rows locked."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import transaction

from flavors.resolution import EffectiveFlavor
from flavors.selectors import active_servers_counted, flavor_resolution
from outposts import dispatch
from outposts.errors import StartRefused
from outposts.usage import project_flavor_hours_this_month

if TYPE_CHECKING:
    from outposts.models import Hub, Outpost


@dataclass(frozen=True)
class Admission:
    """What admission decided for one start: its flavor as resolved (None on an Outpost
    without flavors) and the project it counts against. The start writes them onto the
    server in the same transaction."""

    flavor: EffectiveFlavor | None
    project_id: int | None = None

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
    project: str | None = None,
    user_name: str = "",
) -> Admission:
    """Admit a start of ``user_id`` on ``outpost``, or raise StartRefused with the contract's
    message (api-contract.md §4).

    The limits: the Outpost's per-user limit, then for the flavor as resolved for this Hub
    and user its ``max`` over all Hubs, the Hub's own cap, ``max_per_user`` and, when the
    start names a ``project`` (Hub user ``user_name`` must be a member with a live grant),
    the project's allocation. ``outpost`` must be the row the caller locked
    (outposts.selectors.outpost_for_update) in the transaction that also inserts the
    server, as server_start does: admissions on one Outpost then run one after another, so
    concurrent starts can never overbook. Without a flavor name the highest-weighted flavor
    is used; an Outpost without flavors admits whatever flavor a start names, up to its
    per-user limit.
    """
    assert transaction.get_connection().in_atomic_block, "flavor_admit needs a transaction"
    resolution = flavor_resolution(
        hub=hub,
        outpost=outpost,
        authentication=authentication,
        project=project,
        user_name=user_name,
    )
    for refusal, reason in (
        (resolution.refusal, "outpost_state"),
        (resolution.project_refusal, "project"),
    ):
        if refusal:
            raise StartRefused(f"{server_name} - {refusal}", reason=reason)
    flavor = None
    if not resolution.unrestricted:
        flavor = resolution.named(flavor_name) if flavor_name else resolution.default
    counts = active_servers_counted(
        hub=hub, outpost=outpost, user_id=user_id, flavor=flavor, project_id=resolution.project_id
    )

    if outpost.max_servers_per_user is not None:
        if counts.of_user >= outpost.max_servers_per_user:
            raise StartRefused(
                f"{server_name} - User with user id {user_id} of {hub.name} has reached the "
                f"maximum limit of services ({outpost.max_servers_per_user})",
                reason="user_limit",
            )

    if resolution.unrestricted:
        return Admission(flavor=None)
    if flavor is None:
        raise StartRefused(
            f"{server_name} - Start with flavor {flavor_name} not allowed. "
            f"Allowed values for user: {resolution.names}",
            reason="flavor_not_allowed",
        )

    for cap, counted, reason in (
        (flavor.max, counts.of_flavor, "flavor_max"),
        (flavor.hub_cap, counts.of_flavor_of_hub, "hub_cap"),
    ):
        if cap is not None and counted >= cap:
            raise StartRefused(
                f"{server_name} - Start with {flavor.name} for {hub.name} not allowed. "
                f"Maximum ({cap}) already reached.",
                reason=reason,
            )
    if flavor.max_per_user is not None and counts.of_flavor_of_user >= flavor.max_per_user:
        raise StartRefused(
            f"{server_name} - Start with flavor {flavor.name} not allowed. "
            f"Each user may only start {flavor.max_per_user} of {flavor.name}",
            reason="flavor_per_user",
        )
    if flavor.project_cap is not None and counts.of_flavor_of_project >= flavor.project_cap:
        raise StartRefused(
            f"{server_name} - Start with {flavor.name} for project {project} not allowed. "
            f"Its allocation ({flavor.project_cap}) is in use.",
            reason="project_allocation",
        )
    if flavor.project_hours_per_month is not None:
        used = project_flavor_hours_this_month(
            project_id=resolution.project_id, flavor_id=flavor.flavor_id
        )
        if used >= flavor.project_hours_per_month:
            raise StartRefused(
                f"{server_name} - Project {project} has used its "
                f"{flavor.project_hours_per_month} flavor-hours of {flavor.name} for this month.",
                reason="project_hours",
            )
    return Admission(flavor=flavor, project_id=resolution.project_id)


def flavors_changed(*, outpost: Outpost) -> None:
    """Tell every Hub granted ``outpost`` its new flavor table, once the change commits
    (api-contract.md §6: coalesced, never blocking the save). Call it after any write to the
    Outpost's flavors, Hub policies or user rules, and after a change of its state."""
    for hub_id in outpost.hubs.values_list("pk", flat=True):
        dispatch.queue_hub_flavor_table_send(hub_id=hub_id, outpost_id=outpost.pk)
