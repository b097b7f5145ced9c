"""Reads of the capacity dashboard: how full each Outpost and flavor is, and which Hubs fill it.

"Active" means what admission counts against a flavor's max and a Hub's cap
(Server.objects.active()): every server not stopped or failed, so queued starts and servers of
unknown state hold their slot too. A few grouped queries, whatever the number of servers.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from django.db.models import Count, Q, QuerySet

from flavors.models import Flavor, HubPolicy
from outposts.models import Outpost, Server

ACTIVE = tuple(status for status in Server.Status if status not in Server.ENDED)
QUEUED = (Server.Status.REQUESTED, Server.Status.PENDING)


@dataclass(frozen=True)
class HubShare:
    """One Hub's part of a flavor: its active servers (of which ``queued`` and ``unknown``),
    and its Hub policy's cap (None: no cap, only the flavor's max applies). ``allowed`` False:
    a policy forbids the flavor to the Hub (servers started before it may still run)."""

    hub: str
    active: int
    cap: int | None
    allowed: bool = True
    queued: int = 0
    unknown: int = 0


@dataclass(frozen=True)
class FlavorCapacity:
    """A flavor of an Outpost (``name`` None: the servers that have no flavor)."""

    name: str | None
    display_name: str
    max: int | None
    active: int
    queued: int
    unknown: int
    hubs: tuple[HubShare, ...]

    @property
    def free(self) -> int | None:
        """Slots left under the flavor's max; None when it has none (unlimited)."""
        return None if self.max is None else max(self.max - self.active, 0)


@dataclass(frozen=True)
class OutpostCapacity:
    outpost: Outpost
    flavors: tuple[FlavorCapacity, ...]
    # (status, label, servers) for every Server.Status, in the order they are declared.
    by_status: tuple[tuple[str, str, int], ...]

    @property
    def is_unavailable(self) -> bool:
        return self.outpost.state != Outpost.State.ACTIVE


@dataclass(frozen=True)
class CapacityOverview:
    outposts: tuple[OutpostCapacity, ...]

    @property
    def unavailable(self) -> tuple[Outpost, ...]:
        """The Outposts that take no new starts (draining or disabled)."""
        return tuple(entry.outpost for entry in self.outposts if entry.is_unavailable)


def capacity_overview(*, outposts: QuerySet[Outpost]) -> CapacityOverview:
    """How full each of ``outposts`` is, per flavor and Hub, and its servers by status.

    Four queries: the Outposts, their flavors, their Hub policies and the servers counted by
    Outpost, flavor, Hub and status.
    """
    listed = list(outposts.order_by("name", "pk"))
    ids = [outpost.pk for outpost in listed]
    flavors = list(
        Flavor.objects.filter(outpost_id__in=ids).values(
            "pk", "outpost_id", "name", "display_name", "max"
        )
    )
    policies = {
        (row["flavor_id"], row["hub__name"]): row
        for row in HubPolicy.objects.filter(outpost_id__in=ids).values(
            "flavor_id", "hub__name", "cap", "allowed"
        )
    }
    counts = (
        Server.objects.filter(outpost_id__in=ids)
        .values("outpost_id", "flavor_id", "hub__name", "status")
        .annotate(servers=Count("pk"))
        .order_by()
    )

    by_status: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    # (outpost, flavor) -> status -> servers; (outpost, flavor) -> Hub -> status -> servers,
    # of the active ones
    of_flavor: dict[tuple[int, int | None], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    of_hub: dict[tuple[int, int | None], dict[str, dict[str, int]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(int))
    )
    for row in counts:
        key = (row["outpost_id"], row["flavor_id"])
        by_status[row["outpost_id"]][row["status"]] += row["servers"]
        of_flavor[key][row["status"]] += row["servers"]
        if row["status"] in ACTIVE:
            of_hub[key][row["hub__name"]][row["status"]] += row["servers"]

    def flavor_capacity(
        outpost_id: int, flavor_id: int | None, name: str | None, display_name: str, max: int | None
    ) -> FlavorCapacity:
        statuses = of_flavor[(outpost_id, flavor_id)]
        of_hubs = of_hub[(outpost_id, flavor_id)]
        # A Hub shows when it has servers here or a policy on the flavor.
        hubs = sorted(
            set(of_hubs) | {hub for (flavor, hub) in policies if flavor_id and flavor == flavor_id}
        )
        shares = []
        for hub in hubs:
            policy = policies.get((flavor_id, hub)) if flavor_id else None
            shares.append(
                HubShare(
                    hub=hub,
                    **_counts(of_hubs.get(hub, {})),
                    cap=policy["cap"] if policy else None,
                    allowed=policy["allowed"] if policy else True,
                )
            )
        return FlavorCapacity(
            name=name,
            display_name=display_name,
            max=max,
            **_counts(statuses),
            hubs=tuple(shares),
        )

    entries = []
    for outpost in listed:
        rows = [
            flavor_capacity(
                outpost.pk, flavor["pk"], flavor["name"], flavor["display_name"], flavor["max"]
            )
            for flavor in flavors
            if flavor["outpost_id"] == outpost.pk
        ]
        # Servers without a flavor (an Outpost that has none, or had none when they started)
        # still hold resources: they get a row while any is active.
        if of_hub.get((outpost.pk, None)):
            rows.append(flavor_capacity(outpost.pk, None, None, "(no flavor)", None))
        statuses = by_status[outpost.pk]
        entries.append(
            OutpostCapacity(
                outpost=outpost,
                flavors=tuple(rows),
                by_status=tuple(
                    (status.value, status.label, statuses.get(status, 0))
                    for status in Server.Status
                ),
            )
        )
    return CapacityOverview(outposts=tuple(entries))


def _counts(statuses: dict[str, int]) -> dict[str, int]:
    """Active, queued and unknown servers, from servers by status."""
    return {
        "active": sum(statuses.get(status, 0) for status in ACTIVE),
        "queued": sum(statuses.get(status, 0) for status in QUEUED),
        "unknown": statuses.get(Server.Status.UNKNOWN, 0),
    }


def flavors_with_in_use(*, flavors: QuerySet[Flavor]) -> QuerySet[Flavor]:
    """``flavors``, each annotated with ``in_use``: its active servers, in the same query."""
    return flavors.annotate(in_use=Count("servers", filter=Q(servers__status__in=ACTIVE)))
