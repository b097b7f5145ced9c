"""Which flavors, with which settings, a Hub and one of its users may use on an Outpost.

The one place that decides flavor access. It is pure: it decides from the rows it is given
and never reads the database, so the flavor list, ``userflavors`` (and with it the spawn
form) and admission, which all call ``flavors_resolve``, cannot disagree. Admission then
counts servers against the caps of what this returns (flavors/services.py).

Layers, each applied to what the one before left (architecture.md §Flavors):

1. The Outpost: its state, and its flavors as the starting set. A disabled Outpost offers
   none; a draining one still lists them while its servers wind down, but admits no start.
2. The Hub's policy, then the best-matching user rule, then project grants, plug in here in
   this order; until they exist every Hub granted the Outpost gets its flavors as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from outposts.models import Outpost

if TYPE_CHECKING:
    from flavors.models import Flavor
    from outposts.models import Hub


@dataclass(frozen=True)
class EffectiveFlavor:
    """A flavor as one Hub's user gets it: the flavor row with every layer's overrides."""

    flavor_id: int
    name: str
    display_name: str
    description: str
    weight: int
    max: int | None
    max_per_user: int | None
    runtime: timedelta | None
    resources: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, flavor: Flavor) -> EffectiveFlavor:
        return cls(
            flavor_id=flavor.pk,
            name=flavor.name,
            display_name=flavor.display_name,
            description=flavor.description,
            weight=flavor.weight,
            max=flavor.max,
            max_per_user=flavor.max_per_user,
            runtime=flavor.runtime,
            resources=dict(flavor.resources or {}),
        )

    def frozen_settings(self) -> dict[str, Any]:
        """What a server keeps of its flavor when admitted (Server.flavor_settings): later
        edits of the flavor, or of a policy, do not change a server already admitted."""
        return {
            "display_name": self.display_name,
            "description": self.description,
            "runtime_seconds": None if self.runtime is None else self.runtime.total_seconds(),
            "resources": dict(self.resources),
        }


@dataclass(frozen=True)
class Resolution:
    """The flavors a Hub's user may use on an Outpost, highest weight first, and whether the
    Outpost admits starts at all (``refusal`` says why not)."""

    flavors: tuple[EffectiveFlavor, ...]
    refusal: str | None = None

    def named(self, name: str) -> EffectiveFlavor | None:
        return next((flavor for flavor in self.flavors if flavor.name == name), None)

    @property
    def names(self) -> list[str]:
        return sorted(flavor.name for flavor in self.flavors)

    @property
    def default(self) -> EffectiveFlavor | None:
        """What a start that names no flavor gets: the highest-weighted one."""
        return self.flavors[0] if self.flavors else None


def flavors_resolve(
    *,
    outpost: Outpost,
    flavors: Iterable[Flavor],
    hub: Hub,
    authentication: Mapping[str, Any] | None = None,
) -> Resolution:
    """The flavors ``hub`` (and its user, by ``authentication``) may use on ``outpost``.

    ``flavors`` are the Outpost's flavor rows. ``hub`` and ``authentication`` select the
    Hub's and the user's layers (see the module docstring).
    """
    refusal = None
    if not outpost.accepts_starts:
        refusal = f"Outpost {outpost.slug} is {outpost.state} and accepts no starts."
    if outpost.state == Outpost.State.DISABLED:
        return Resolution(flavors=(), refusal=refusal)
    effective = sorted(
        (EffectiveFlavor.of(flavor) for flavor in flavors),
        key=lambda flavor: (-flavor.weight, flavor.name),
    )
    return Resolution(flavors=tuple(effective), refusal=refusal)
