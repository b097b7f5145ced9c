"""Which flavors, with which settings, a Hub and one of its users may use on an Outpost.

The one place that decides flavor access. It is pure: it decides from the rows and terms it
is given and never reads the database, so the flavor list, ``userflavors`` (and with it the
spawn form), the admin's "who can use what" preview and admission, which all call
``flavors_resolve``, cannot disagree. Admission then counts servers against the caps of what
this returns (flavors/services.py).

Layers, each applied to what the one before left (architecture.md §Flavors, docs/flavors.md):

1. The Outpost: its state, and its flavors as the starting set. A disabled Outpost offers
   none; a draining one still lists them while its servers wind down, but admits no start.
   An Outpost without any flavor admits a start whatever flavor it names.
2. The Hub's policy, a tenant boundary: once the Hub has policies on the Outpost, only the
   flavors a policy allows, with that policy's overrides and the Hub's own cap.
3. The best-matching user rule (highest weight; on a tie the later rule): forbidden (no
   flavors), a filter of the Hub's flavors, overrides on top of the Hub's. It can only take
   away from what the Hub may use. No authentication, or no matching rule: the Hub's answer.
4. With a project named (a start's ``user_options.project``, ``project`` in the userflavors
   body): only the flavors the project's managers granted this member, of those the
   project was allocated and the layers above left. Not a member: no flavors, and a refusal
   that says so. The allocation's count is admission's (flavors/services.py). An Outpost
   without projects ignores the name (a batch spawner may read it as the user's account).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from flavors.matching import Pattern, attributes_match
from flavors.models import runtime_from_wire
from outposts.models import Outpost

if TYPE_CHECKING:
    from flavors.models import Flavor
    from outposts.models import Hub


@dataclass(frozen=True)
class EffectiveFlavor:
    """A flavor as one Hub's user gets it: the flavor row with every layer's overrides, the
    Hub's own cap, the named project's allocation, and which policy, rule and project shaped
    it (``decided_by``)."""

    flavor_id: int
    name: str
    display_name: str
    description: str
    weight: int
    max: int | None
    max_per_user: int | None
    runtime: timedelta | None
    resources: Mapping[str, Any] = field(default_factory=dict)
    hub_cap: int | None = None
    # Servers of it the named project may run at once (its allocation); None: no project.
    project_cap: int | None = None
    project_hours_per_month: int | None = None
    decided_by: tuple[str, ...] = ()

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

    def overridden(self, overrides: Mapping[str, Any], *, by: str) -> EffectiveFlavor:
        """This flavor with ``overrides`` (flavors.models.OVERRIDABLE fields) applied."""
        changes: dict[str, Any] = {
            key: overrides[key]
            for key in ("display_name", "description", "weight", "max_per_user")
            if key in overrides
        }
        if "runtime" in overrides:
            changes["runtime"] = runtime_from_wire(overrides["runtime"])
        if "resources" in overrides:
            changes["resources"] = dict(overrides["resources"])
        return replace(self, **changes, decided_by=(*self.decided_by, by))

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
class PolicyTerms:
    """A HubPolicy row as resolution reads it (flavors/selectors.py builds these)."""

    flavor_id: int
    allowed: bool = True
    cap: int | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RuleTerms:
    """A UserRule row as resolution reads it. Empty ``hub_ids``: every Hub; empty
    ``flavor_ids``: every flavor the Hub may use."""

    name: str
    attributes: Mapping[str, Pattern]
    negate: bool = False
    weight: int = 0
    forbidden: bool = False
    hub_ids: frozenset[int] = frozenset()
    flavor_ids: frozenset[int] = frozenset()
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def applies(self, *, hub: Hub, authentication: Mapping[str, Any]) -> bool:
        if self.hub_ids and hub.pk not in self.hub_ids:
            return False
        return attributes_match(self.attributes, authentication) != self.negate


@dataclass(frozen=True)
class ProjectTerms:
    """A project as resolution reads it, for one Hub user: whether they are a member, and
    the flavors they hold a live grant of that the project has an allocation of, with the
    allocation (``allocated``: flavor id -> servers the project may run at once)."""

    id: int | None
    name: str
    member: bool = False
    allocated: Mapping[int, int] = field(default_factory=dict)
    granted_ids: frozenset[int] = frozenset()
    # flavor id -> flavor-hours per month, for the allocations that limit them.
    hours_per_month: Mapping[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Layers:
    """The Hub's policies on one Outpost, the Outpost's user rules in list order, and the
    project a request names (None: none named)."""

    policies: tuple[PolicyTerms, ...] = ()
    rules: tuple[RuleTerms, ...] = ()
    project: ProjectTerms | None = None


@dataclass(frozen=True)
class Resolution:
    """The flavors a Hub's user may use on an Outpost, highest weight first, and whether the
    Outpost admits starts at all (``refusal`` says why not).

    ``rule`` names the user rule that decided, ``left_out`` each flavor of the Outpost not
    offered, with why. ``unrestricted``: the Outpost has no flavors, so a start may name any.
    ``project_refusal``: why the named project gives this user nothing at all; else
    ``project_id`` is the project whose allocation counts.
    """

    flavors: tuple[EffectiveFlavor, ...]
    refusal: str | None = None
    rule: str | None = None
    left_out: tuple[tuple[str, str], ...] = ()
    unrestricted: bool = False
    project_refusal: str | None = None
    project_id: int | None = None

    def named(self, name: str) -> EffectiveFlavor | None:
        return next((flavor for flavor in self.flavors if flavor.name == name), None)

    @property
    def names(self) -> list[str]:
        return sorted(flavor.name for flavor in self.flavors)

    @property
    def default(self) -> EffectiveFlavor | None:
        """What a start that names no flavor gets: the highest-weighted one."""
        return self.flavors[0] if self.flavors else None


def best_rule(
    rules: Iterable[RuleTerms], *, hub: Hub, authentication: Mapping[str, Any] | None
) -> RuleTerms | None:
    """The rule that decides for this user: of those that apply, the highest weight, and on
    a tie the later one. None without authentication: the user gets the Hub's answer."""
    if not authentication:
        return None
    best = None
    for rule in rules:
        if rule.applies(hub=hub, authentication=authentication) and (
            best is None or rule.weight >= best.weight
        ):
            best = rule
    return best


def _by_hub_policy(
    flavors: list[EffectiveFlavor], policies: tuple[PolicyTerms, ...], hub: Hub
) -> tuple[list[EffectiveFlavor], list[tuple[str, str]]]:
    if not policies:
        return flavors, []
    by_flavor = {policy.flavor_id: policy for policy in policies}
    kept, left_out = [], []
    for flavor in flavors:
        policy = by_flavor.get(flavor.flavor_id)
        if policy is None or not policy.allowed:
            why = "no policy allows it" if policy is None else "its policy does not allow it"
            left_out.append((flavor.name, f"Hub {hub.name}: {why}"))
            continue
        shaped = flavor.overridden(policy.overrides, by=f"policy of Hub {hub.name}")
        kept.append(replace(shaped, hub_cap=policy.cap))
    return kept, left_out


def _by_user_rule(
    flavors: list[EffectiveFlavor], rule: RuleTerms
) -> tuple[list[EffectiveFlavor], list[tuple[str, str]]]:
    if rule.forbidden:
        return [], [(flavor.name, f"rule {rule.name} forbids all flavors") for flavor in flavors]
    kept, left_out = [], []
    for flavor in flavors:
        if rule.flavor_ids and flavor.flavor_id not in rule.flavor_ids:
            left_out.append((flavor.name, f"rule {rule.name} does not list it"))
            continue
        kept.append(flavor.overridden(rule.overrides.get(flavor.name, {}), by=f"rule {rule.name}"))
    return kept, left_out


def _by_project(
    flavors: list[EffectiveFlavor], project: ProjectTerms
) -> tuple[list[EffectiveFlavor], list[tuple[str, str]]]:
    kept, left_out = [], []
    for flavor in flavors:
        if flavor.flavor_id not in project.allocated:
            left_out.append((flavor.name, f"project {project.name} has no allocation of it"))
        elif flavor.flavor_id not in project.granted_ids:
            left_out.append((flavor.name, f"no live grant of it in project {project.name}"))
        else:
            kept.append(
                replace(
                    flavor,
                    project_cap=project.allocated[flavor.flavor_id],
                    project_hours_per_month=project.hours_per_month.get(flavor.flavor_id),
                    decided_by=(*flavor.decided_by, f"project {project.name}"),
                )
            )
    return kept, left_out


def _project_refusal(project: ProjectTerms, *, hub: Hub, user_name: str) -> str | None:
    if project.id is None:
        return f"There is no project {project.name} here."
    if not project.member:
        return f"{user_name} of {hub.name} is not a member of project {project.name}."
    return None


def _by_weight(flavors: Iterable[EffectiveFlavor]) -> list[EffectiveFlavor]:
    return sorted(flavors, key=lambda flavor: (-flavor.weight, flavor.name))


def flavors_resolve(
    *,
    outpost: Outpost,
    flavors: Iterable[Flavor],
    hub: Hub,
    layers: Layers = Layers(),
    authentication: Mapping[str, Any] | None = None,
    user_name: str = "",
) -> Resolution:
    """The flavors ``hub`` (and its user, by ``authentication``) may use on ``outpost``.

    ``flavors`` are the Outpost's flavor rows, ``layers`` the Hub's policies, the
    Outpost's user rules and the named project (flavors.selectors.flavor_layers);
    ``user_name`` names the Hub user in a project's refusal. See the module docstring.
    """
    refusal = None
    if not outpost.accepts_starts:
        refusal = f"Outpost {outpost.slug} is {outpost.state} and accepts no starts."
        if outpost.state_message:
            refusal = f"{refusal} {outpost.state_message}"
    if outpost.state == Outpost.State.DISABLED:
        return Resolution(flavors=(), refusal=refusal)
    offered = _by_weight(EffectiveFlavor.of(flavor) for flavor in flavors)
    if not offered:
        return Resolution(flavors=(), refusal=refusal, unrestricted=True)
    offered, left_out = _by_hub_policy(offered, layers.policies, hub)
    rule = best_rule(layers.rules, hub=hub, authentication=authentication)
    if rule is not None:
        offered, left_by_rule = _by_user_rule(offered, rule)
        left_out += left_by_rule
    project_refusal = None
    if layers.project is not None:
        project_refusal = _project_refusal(layers.project, hub=hub, user_name=user_name)
        if project_refusal is None:
            offered, left_by_project = _by_project(offered, layers.project)
            left_out += left_by_project
        else:
            left_out += [(flavor.name, project_refusal) for flavor in offered]
            offered = []
    return Resolution(
        flavors=tuple(_by_weight(offered)),  # again: overrides may change weights
        refusal=refusal,
        rule=None if rule is None else rule.name,
        left_out=tuple(left_out),
        project_refusal=project_refusal,
        project_id=None if layers.project is None or project_refusal else layers.project.id,
    )
