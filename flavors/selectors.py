"""Reads of flavors: what a Hub (and one of its users) may use, with how many are active."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db.models import Count, Q, QuerySet, Value

from flavors.resolution import EffectiveFlavor, Layers, Resolution, flavors_resolve
from flavors.terms import FlavorTerms, flavor_terms
from outposts.models import Server
from portal.compiled import compiled, id_stand_ins, text_stand_in
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
    *,
    hub: Hub,
    outpost: Outpost,
    terms: FlavorTerms,
    project: str | None = None,
    user_name: str = "",
) -> Layers:
    """The Hub's policies on ``outpost`` and its user rules, of its ``terms``, and, when a
    request names one, the ``project`` as Hub user ``user_name`` may use it, for
    flavors_resolve."""
    return Layers(
        policies=terms.policies_of(hub.pk),
        rules=terms.rules,
        project=None
        if not project
        else project_terms(hub=hub, outpost=outpost, name=project, user_name=user_name),
    )


def outpost_flavor_terms(outpost: Outpost) -> FlavorTerms:
    """The Outpost's flavor terms as of its row's token (flavors/terms.py): read the row in
    the same request, or under its lock, to see every committed change."""
    return flavor_terms(outpost_id=outpost.pk, token=outpost.flavor_terms_token)


def flavor_resolution(
    *,
    hub: Hub,
    outpost: Outpost,
    authentication: Mapping[str, Any] | None = None,
    project: str | None = None,
    user_name: str = "",
) -> Resolution:
    """flavors_resolve over the Outpost's terms."""
    terms = outpost_flavor_terms(outpost)
    return flavors_resolve(
        outpost=outpost,
        flavors=terms.flavors,
        hub=hub,
        layers=flavor_layers(
            hub=hub, outpost=outpost, terms=terms, project=project, user_name=user_name
        ),
        authentication=authentication,
        user_name=user_name,
    )


def active_servers_by_flavor_query(
    *, hub: Hub | int, outpost: Outpost | int, user_id: str | None
) -> QuerySet[Server, tuple[Any, ...]]:
    """Per flavor of ``outpost``: (flavor id, its active servers over all Hubs, those of
    ``hub``, those of its user ``user_id`` or 0 without one) rows; one query however many
    flavors and servers there are."""
    of_hub = Q(hub=hub)
    of_user = Value(0) if user_id is None else Count("pk", filter=of_hub & Q(user_id=user_id))
    return (
        Server.objects.active()
        .filter(outpost=outpost)
        .order_by()
        .values("flavor_id")
        .annotate(
            active=Count("pk"),
            active_of_hub=Count("pk", filter=of_hub),
            active_of_user=of_user,
        )
        .values_list("flavor_id", "active", "active_of_hub", "active_of_user")
    )


@dataclass(frozen=True)
class ActiveCounts:
    """The active servers admission weighs a start against (flavors/services.py)."""

    of_user: int = 0
    of_flavor: int = 0
    of_flavor_of_hub: int = 0
    of_flavor_of_user: int = 0
    of_flavor_of_project: int = 0


# Stand-ins for the values of the compiled counts (portal/compiled.py).
_HUB_ID, _OUTPOST_ID, _FLAVOR_ID, _PROJECT_ID = id_stand_ins(4)
_USER_ID = text_stand_in("user_id")


def _active_counts_query(
    *, counted: tuple[str, ...], of_project: bool
) -> QuerySet[Server, tuple[Any, ...]]:
    """The ``counted`` ActiveCounts of one Outpost's active servers: one row, or none when it
    has no active server."""
    of_user = Q(hub_id=_HUB_ID, user_id=_USER_ID)
    of_flavor = Q(flavor_id=_FLAVOR_ID)
    among = {
        "of_user": of_user,
        "of_flavor": of_flavor,
        "of_flavor_of_hub": of_flavor & Q(hub_id=_HUB_ID),
        "of_flavor_of_user": of_flavor & of_user,
        "of_flavor_of_project": of_flavor & Q(project_id=_PROJECT_ID if of_project else None),
    }
    return (
        Server.objects.active()
        .filter(outpost_id=_OUTPOST_ID)
        .order_by()
        .values("outpost_id")
        .annotate(**{name: Count("pk", filter=among[name]) for name in counted})
        .values_list(*counted)
    )


def active_servers_counted(
    *,
    hub: Hub,
    outpost: Outpost,
    user_id: str,
    flavor: EffectiveFlavor | None,
    project_id: int | None,
) -> ActiveCounts:
    """The active servers on ``outpost`` of the Hub's user ``user_id`` and, with a
    ``flavor``, of it: over all Hubs, of ``hub``, of the user, and of the project
    ``project_id``. Only what the Outpost's and the flavor's limits cap is counted, in one
    query compiled once (every start counts); none when nothing is capped."""
    caps = {"of_user": outpost.max_servers_per_user}
    if flavor is not None:
        caps.update(
            of_flavor=flavor.max,
            of_flavor_of_hub=flavor.hub_cap,
            of_flavor_of_user=flavor.max_per_user,
            of_flavor_of_project=flavor.project_cap,
        )
    counted = tuple(name for name, cap in caps.items() if cap is not None)
    if not counted:
        return ActiveCounts()
    values = {
        _HUB_ID: hub.pk,
        _OUTPOST_ID: outpost.pk,
        _USER_ID: user_id,
        _FLAVOR_ID: None if flavor is None else flavor.flavor_id,
        _PROJECT_ID: project_id,
    }
    query = compiled(_active_counts_query, counted=counted, of_project=project_id is not None)
    rows = query.rows(values)
    return ActiveCounts(**dict(zip(counted, rows[0], strict=True))) if rows else ActiveCounts()


def flavor_list_for_hub(
    *,
    hub: Hub,
    outpost: Outpost,
    authentication: Mapping[str, Any] | None = None,
    user_id: str | None = None,
    project: str | None = None,
    counted: Iterable[Sequence[Any]] | None = None,
) -> list[FlavorInUse]:
    """The flavors ``hub`` (and the user ``authentication`` describes) may use on
    ``outpost``, highest weight first, as flavors/resolution.py decides; with ``user_id``
    also how many servers of each that Hub user has; with ``project`` what that project's
    grants give the user ``authentication["name"]``.

    The counts are one query however many flavors and servers there are:
    active_servers_by_flavor_query's, or its rows ``counted`` by a caller that ran it
    itself (outposts/api/direct/, compiled once).
    """
    resolution = flavor_resolution(
        hub=hub,
        outpost=outpost,
        authentication=authentication,
        project=project,
        user_name=str((authentication or {}).get("name") or ""),
    )
    if counted is None:
        counted = active_servers_by_flavor_query(hub=hub, outpost=outpost, user_id=user_id)
    counts = {flavor_id: numbers for flavor_id, *numbers in counted}
    listing = []
    for flavor in resolution.flavors:
        active, active_of_hub, active_of_user = counts.get(flavor.flavor_id, (0, 0, 0))
        listing.append(
            FlavorInUse(
                flavor,
                active=active,
                active_of_hub=active_of_hub,
                active_of_user=None if user_id is None else active_of_user,
            )
        )
    return listing
