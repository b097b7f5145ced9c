"""The admin's "who can use what" preview: what one Hub's user would get on an Outpost.

A read for a page, nothing more: the flavors and their numbers come from
``flavor_list_for_hub`` (what ``userflavors`` answers) and the deciding rule and the flavors
left out from ``flavor_resolution`` (what admission decides with), so the preview cannot
disagree with the API. Nothing here decides access.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from flavors.models import HubPolicy
from flavors.selectors import FlavorInUse, flavor_list_for_hub, flavor_resolution

if TYPE_CHECKING:
    from outposts.models import Hub, Outpost

_UNITS = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))


def runtime_text(runtime: timedelta | None) -> str:
    """A runtime as an admin reads it: "2 h", "1 h 30 min"; "no limit" for none."""
    if runtime is None:
        return "no limit"
    seconds = int(runtime.total_seconds())
    parts = []
    for unit, size in _UNITS:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}")
    return " ".join(parts) or "0 s"


@dataclass(frozen=True)
class PreviewedFlavor:
    """One flavor the user may use, with the caps that apply to them and what shaped it."""

    listed: FlavorInUse

    @property
    def name(self) -> str:
        return self.listed.flavor.name

    @property
    def display_name(self) -> str:
        return self.listed.flavor.display_name

    @property
    def flavor_max(self) -> int | None:
        """The flavor's own max over all Hubs (no layer overrides it)."""
        return self.listed.flavor.max

    @property
    def hub_cap(self) -> int | None:
        return self.listed.flavor.hub_cap

    @property
    def hub_max(self) -> int | None:
        """The answer's ``max``: the Hub's effective cap."""
        return self.listed.max

    @property
    def hub_current(self) -> int:
        """The answer's ``current``: what counts against ``hub_max``."""
        return self.listed.current

    @property
    def max_per_user(self) -> int | None:
        """After the policy's and the rule's overrides."""
        return self.listed.flavor.max_per_user

    @property
    def user_active(self) -> int | None:
        """The user's own active servers of it; None when no Hub user id was given."""
        return self.listed.active_of_user

    @property
    def runtime(self) -> str:
        return runtime_text(self.listed.flavor.runtime)

    @property
    def decided_by(self) -> tuple[str, ...]:
        # An empty trail is an answer too: nothing changed the flavor's own settings.
        return self.listed.flavor.decided_by or ("the flavor's own settings",)


@dataclass(frozen=True)
class FlavorPreview:
    """What ``hub``'s user with these attributes would get on the Outpost."""

    flavors: tuple[PreviewedFlavor, ...]
    rule: str | None
    left_out: tuple[tuple[str, str], ...]
    refusal: str | None
    unrestricted: bool
    hub_has_policies: bool
    user_id: str | None


def flavor_preview(
    *,
    hub: Hub,
    outpost: Outpost,
    authentication: Mapping[str, Any] | None,
    user_id: str | None = None,
) -> FlavorPreview:
    """The flavors ``hub``'s user (by ``authentication``, and ``user_id`` for their own
    counts) may use on ``outpost``, as the API and admission resolve them."""
    listing = flavor_list_for_hub(
        hub=hub, outpost=outpost, authentication=authentication, user_id=user_id
    )
    resolution = flavor_resolution(hub=hub, outpost=outpost, authentication=authentication)
    return FlavorPreview(
        flavors=tuple(PreviewedFlavor(listed) for listed in listing),
        rule=resolution.rule,
        left_out=resolution.left_out,
        refusal=resolution.refusal,
        unrestricted=resolution.unrestricted,
        hub_has_policies=HubPolicy.objects.filter(hub=hub, outpost=outpost).exists(),
        user_id=user_id,
    )
