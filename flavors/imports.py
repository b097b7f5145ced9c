"""A flavors file of the existing JupyterHub Outpost service, read as the portal's rows (pure).

``flavor_file_plan`` turns the file's ``flavors``, ``hubs`` and ``users`` into the entries
``apply_config`` takes under an Outpost (``flavors``, ``hub_policies``, ``user_rules``;
flavors/provisioning.py writes them), and says where the file means something else under the
portal's layering. It reads no database: the caller passes the Hubs the portal has. The
mapping, and why each difference is one, is docs/flavors-import.md.

What the existing service does with the file, which the plan keeps or reports:

- A Hub takes the **first** set of ``hubs``, in file order, whose ``jupyterhub_name`` matches
  it: the service stops at the first match, so a set's ``weight`` never decides. A Hub that
  no set matches gets every flavor: it gets no policy rows here either.
- Of the ``users`` sets that match a user, the heaviest wins (the later one on a tie), as here.
  But it then filters and overrides the file's flavors **as the ``flavors`` section has them**,
  not the Hub's: a user set can grant a flavor the Hub's set excludes, and drops the Hub's
  overrides and ``max``. Here the Hub's policy is a tenant boundary the rule works within.
- ``max`` is counted per Hub there (each Hub may run ``max``), over all Hubs here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flavors.flavor_file import (
    FILE_KEYS,
    FILE_NAMES,
    FLAVOR_KEYS,
    HUB_SET_KEYS,
    OVERRIDE_NAMES,
    USER_SET_KEYS,
    existing_service_matches,
    fail,
    read_flag,
    read_mapping,
    read_max,
    read_names,
    read_text,
    read_whole,
)
from flavors.matching import text_matches
from flavors.models import runtime_as_wire, runtime_from_wire


@dataclass(frozen=True)
class Planned:
    """One entry to write, in apply_config's format, and the file's key path it comes from
    (error messages name that path)."""

    entry: dict[str, Any]
    source: str


@dataclass
class ImportPlan:
    """What the Outpost should hold after the import, and what the file means differently.

    ``differences``: rules of the file whose meaning the portal's layering changes.
    ``notes``: what is not imported or has no effect in either, and other things to check.
    """

    flavors: list[Planned] = field(default_factory=list)
    hub_policies: list[Planned] = field(default_factory=list)
    user_rules: list[Planned] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class _HubSet:
    name: str
    weight: int
    allowed: list[str] | None  # None: every flavor of the file
    caps: dict[str, int | None]  # flavor -> the set's max override, where it has one
    overrides: dict[str, dict[str, Any]]  # flavor -> the portal's override fields
    hubs: list[str] = field(default_factory=list)  # the Hubs this set decides for

    def allows(self, flavor: str) -> bool:
        return self.allowed is None or flavor in self.allowed


@dataclass
class _UserSet:
    name: str
    hubs: list[str] | None  # None: every Hub
    flavors: list[str] | None  # None: every flavor
    overrides: dict[str, dict[str, Any]]


def _max_text(value: int | None) -> str:
    return "unlimited" if value is None else str(value)


def _hubs_text(names: list[str]) -> str:
    return ("Hub " if len(names) == 1 else "Hubs ") + ", ".join(names)


class _Planner:
    def __init__(self, data: Any, hubs: Mapping[str, bool]) -> None:
        self.data = read_mapping("", data, FILE_KEYS)
        self.hubs = dict(sorted(hubs.items()))  # name -> granted the Outpost
        self.plan = ImportPlan()
        self.flavor_max: dict[str, int | None] = {}
        self.hub_sets: list[_HubSet] = []
        self.decided: dict[str, _HubSet] = {}  # Hub name -> the set that decides for it

    def difference(self, text: str) -> None:
        self.plan.differences.append(text)

    def note(self, text: str) -> None:
        self.plan.notes.append(text)

    # flavors ---------------------------------------------------------------------------

    def max_per_user(self, path: str, value: Any) -> int | None:
        """The file's ``maxPerUser``: 0 (or none) is unlimited. The portal writes unlimited
        as -1 in its answers; the existing service refuses every start with -1."""
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < -1:
            raise fail(path, f"must be 0 (unlimited) or a number of servers, not {value!r}")
        if value == -1:
            self.difference(
                f"{path} is -1: the existing service refuses every start with it (only 0 or no "
                "value mean unlimited there); imported as unlimited"
            )
        return value if value > 0 else None

    def flavors(self) -> None:
        for name, value in read_mapping("flavors", self.data.get("flavors")).items():
            path = f"flavors.{name}"
            item = read_mapping(path, value, FLAVOR_KEYS)
            runtime = item.get("runtime") or None  # {} is no runtime there too
            if runtime is not None:
                try:
                    runtime = runtime_as_wire(runtime_from_wire(runtime))
                except ValueError as error:
                    raise fail(f"{path}.runtime", str(error)) from None
            self.flavor_max[name] = read_max(f"{path}.max", item.get("max"))
            entry = {
                "name": name,
                "display_name": read_text(f"{path}.display_name", item.get("display_name", name)),
                "description": read_text(f"{path}.description", item.get("description") or ""),
                "weight": read_whole(f"{path}.weight", item.get("weight", 0)),
                "max": self.flavor_max[name],
                "max_per_user": self.max_per_user(f"{path}.maxPerUser", item.get("maxPerUser")),
                "runtime": runtime,
                "resources": item.get("resources") or {},
            }
            self.plan.flavors.append(Planned(entry, path))

    def overrides(
        self, set_path: str, value: Any, listed: list[str] | None, *, hub_set: bool
    ) -> tuple[dict[str, dict[str, Any]], dict[str, int | None]]:
        """A set's ``flavorsOverride`` as the portal's override fields per flavor, and (for a
        Hub set) its ``max`` overrides. Overrides of flavors the set does not offer have no
        effect in the existing service either: left out, and said."""
        overrides: dict[str, dict[str, Any]] = {}
        caps: dict[str, int | None] = {}
        path = f"{set_path}.flavorsOverride"
        for flavor, fields in read_mapping(path, value).items():
            here = f"{path}.{flavor}"
            fields = read_mapping(here, fields, ("max", *OVERRIDE_NAMES))
            if flavor not in self.flavor_max:
                why = "no flavor of the file"
            elif listed is not None and flavor not in listed:
                why = f"not in {set_path}.flavors"
            else:
                why = ""
            if why:
                self.note(
                    f"{here}: {flavor} is {why}, so the override has no effect (in the existing "
                    "service neither): not imported"
                )
                continue
            ours: dict[str, Any] = {}
            for key, item in fields.items():
                if key == "max":
                    if hub_set:
                        caps[flavor] = read_max(f"{here}.max", item)
                    else:
                        self.note(
                            f"{here}.max: a user set's max has no meaning in the portal (a "
                            "flavor's max counts all users, a Hub policy's cap a Hub's): not "
                            "imported"
                        )
                elif key == "maxPerUser":
                    ours["max_per_user"] = self.max_per_user(f"{here}.maxPerUser", item)
                else:
                    ours[OVERRIDE_NAMES[key]] = item
            if ours:
                overrides[flavor] = ours
        return overrides, caps

    def listed(self, path: str, value: Any) -> list[str]:
        names = read_names(path, value)
        unknown = [name for name in names if name not in self.flavor_max]
        if unknown:
            self.note(
                f"{path} names {', '.join(unknown)}, which the file's flavors do not have: "
                "ignored, as by the existing service"
            )
        return [name for name in names if name in self.flavor_max]

    # hubs ------------------------------------------------------------------------------

    def matched_hubs(self, path: str, pattern: Any) -> tuple[list[str], list[str]]:
        """The Hubs a set's ``jupyterhub_name`` matches: as the portal reads the pattern, and
        as the existing service does."""
        if isinstance(pattern, list):
            names = read_names(path, pattern)
            missing = [name for name in names if name not in self.hubs]
            if missing:
                raise fail(
                    path,
                    f"no Hub named {', '.join(missing)} in the portal; create "
                    f"{'it' if len(missing) == 1 else 'them'} first (admin or apply_config)",
                )
            return names, names
        if not isinstance(pattern, str):
            raise fail(path, "must be a list of Hub names or a pattern (text)")
        return (
            [name for name in self.hubs if text_matches(pattern, name)],
            [name for name in self.hubs if existing_service_matches(pattern, name)],
        )

    def hub_sets_plan(self) -> None:
        theirs: dict[str, _HubSet] = {}  # the set that decides for a Hub in the existing service
        patterns: dict[str, str] = {}
        for name, value in read_mapping("hubs", self.data.get("hubs")).items():
            path = f"hubs.{name}"
            item = read_mapping(path, value, HUB_SET_KEYS)
            allowed = None
            if "flavors" in item:
                allowed = self.listed(f"{path}.flavors", item["flavors"])
            overrides, caps = self.overrides(
                path, item.get("flavorsOverride"), allowed, hub_set=True
            )
            hub_set = _HubSet(
                name=name,
                weight=read_whole(f"{path}.weight", item.get("weight", 0)),
                allowed=allowed,
                caps=caps,
                overrides=overrides,
            )
            pattern = item.get("jupyterhub_name", [])
            ours, matched_there = self.matched_hubs(f"{path}.jupyterhub_name", pattern)
            if isinstance(pattern, str):
                patterns[name] = pattern
            for hub in matched_there:
                theirs.setdefault(hub, hub_set)
            for hub in ours:
                first = self.decided.get(hub)
                if first is None:
                    self.decided[hub] = hub_set
                    hub_set.hubs.append(hub)
                elif theirs.get(hub) is first:
                    heavier = (
                        f" (its weight {hub_set.weight} above {first.weight} does not change "
                        "that, though the service's documentation says so)"
                        if hub_set.weight > first.weight
                        else ""
                    )
                    self.note(
                        f"{path} also matches Hub {hub}, but hubs.{first.name} comes first in "
                        f"the file and decides for it, as in the existing service{heavier}"
                    )
            if not ours:
                self.note(f"{path} matches no Hub of the portal: nothing imported for it")
            self.hub_sets.append(hub_set)

        for hub, hub_set in self.decided.items():
            there = theirs.get(hub)
            if there is not hub_set:
                pattern = patterns[hub_set.name]
                how = "as equal text" if pattern == hub else "as a glob"
                self.difference(
                    f"Hub {hub} gets hubs.{hub_set.name}: its jupyterhub_name {pattern!r} "
                    f"matches {hub} {how}, but the existing service tries a glob (or equal text) "
                    "only when a pattern is no valid regular expression, so there "
                    f"{hub} gets "
                    + (f"hubs.{there.name}" if there else "every flavor (no set matches it)")
                )

        for hub_set in self.hub_sets:
            for hub in hub_set.hubs:
                for planned in self.plan.flavors:
                    flavor = planned.entry["name"]
                    entry = {
                        "hub": hub,
                        "flavor": flavor,
                        "allowed": hub_set.allows(flavor),
                        "cap": hub_set.caps.get(flavor),
                        "overrides": hub_set.overrides.get(flavor, {}),
                    }
                    source = f"hubs.{hub_set.name}"
                    if flavor in hub_set.overrides or flavor in hub_set.caps:
                        source += f".flavorsOverride.{flavor}"
                    self.plan.hub_policies.append(Planned(entry, source))
            for flavor, cap in hub_set.caps.items():
                flavor_max = self.flavor_max[flavor]
                if hub_set.hubs and cap is not None and flavor_max is not None and cap > flavor_max:
                    self.difference(
                        f"hubs.{hub_set.name}.flavorsOverride.{flavor}.max {cap} is above the "
                        f"flavor's max {flavor_max}: the existing service lets "
                        f"{_hubs_text(hub_set.hubs)} run {cap}; under the portal the flavor's "
                        f"max {flavor_max} still holds for all Hubs together"
                    )

    def max_counted_per_hub(self) -> None:
        decided = self.decided
        for flavor, flavor_max in self.flavor_max.items():
            if flavor_max is None:
                continue
            using = [
                hub
                for hub, granted in self.hubs.items()
                if granted and (hub not in decided or decided[hub].allows(flavor))
            ]
            if len(using) > 1:
                self.difference(
                    f"flavors.{flavor}.max {flavor_max}: the existing service counts it per Hub "
                    f"(each of {', '.join(using)} may run {flavor_max}); the portal counts the "
                    f"servers of all Hubs together. For a share per Hub, give Hub policies a cap"
                )

    # users -----------------------------------------------------------------------------

    def user_sets_plan(self) -> None:
        for name, value in read_mapping("users", self.data.get("users")).items():
            path = f"users.{name}"
            item = read_mapping(path, value, USER_SET_KEYS)
            hubs = None
            if "hubs" in item:
                hubs = read_names(f"{path}.hubs", item["hubs"])
                missing = [hub for hub in hubs if hub not in self.hubs]
                if missing:
                    raise fail(
                        f"{path}.hubs",
                        f"no Hub named {', '.join(missing)} in the portal; create "
                        f"{'it' if len(missing) == 1 else 'them'} first (admin or apply_config)",
                    )
                if not hubs:
                    self.note(f"{path}.hubs is empty: the set applies to no Hub: not imported")
                    continue
            forbidden = read_flag(f"{path}.forbidden", item.get("forbidden", False))
            listed = None
            if "flavors" in item:
                listed = self.listed(f"{path}.flavors", item["flavors"])
                if not listed and not forbidden:
                    forbidden = True
                    self.note(
                        f"{path}.flavors leaves no flavor: the set's users get none, as in the "
                        "existing service: imported as forbidden"
                    )
            entry: dict[str, Any] = {
                "name": name,
                "attributes": item.get("authentication") or {},
                "negate": read_flag(
                    f"{path}.negate_authentication", item.get("negate_authentication", False)
                ),
                "weight": read_whole(f"{path}.weight", item.get("weight", 0)),
                "forbidden": forbidden,
                "hubs": hubs or [],
                "flavors": [],
                "overrides": {},
            }
            if forbidden:
                if item.get("flavorsOverride") or listed:
                    self.note(
                        f"{path} is forbidden, so its flavors and flavorsOverride have no effect "
                        "(in the existing service neither): not imported"
                    )
            else:
                overrides, _ = self.overrides(
                    path, item.get("flavorsOverride"), listed, hub_set=False
                )
                entry.update(flavors=listed or [], overrides=overrides)
                self.layering_differences(_UserSet(name, hubs, listed, overrides))
            self.plan.user_rules.append(Planned(entry, path))

    def layering_differences(self, user_set: _UserSet) -> None:
        """Where this user set means something else on the Hubs a Hub set decides for: the
        existing service applies it to the file's flavors as they are, the portal within the
        Hub's policy (Hubs no set decides for have no policy, so the two agree there)."""
        path = f"users.{user_set.name}"
        flavors = user_set.flavors if user_set.flavors is not None else list(self.flavor_max)
        for hub_set in self.hub_sets:
            hubs = [hub for hub in hub_set.hubs if user_set.hubs is None or hub in user_set.hubs]
            if not hubs:
                continue
            where = f"{_hubs_text(hubs)} (hubs.{hub_set.name})"
            for flavor in flavors:
                if not hub_set.allows(flavor):
                    self.difference(
                        f"{path} grants {flavor}, which hubs.{hub_set.name} excludes for "
                        f"{_hubs_text(hubs)}: under the portal's layering those users do not "
                        f"get {flavor} there (the existing service gives it them)"
                    )
                    continue
                own = user_set.overrides.get(flavor, {})
                kept = [
                    FILE_NAMES[key] for key in hub_set.overrides.get(flavor, {}) if key not in own
                ]
                if kept:
                    self.difference(
                        f"{path} on {where}: the existing service gives these users {flavor} "
                        f"without the Hub set's override of {', '.join(kept)}; under the "
                        "portal's layering they keep it"
                    )
                if flavor in hub_set.caps:
                    self.difference(
                        f"{path} on {where}: the existing service holds these users' starts of "
                        f"{flavor} to the flavor's own max "
                        f"({_max_text(self.flavor_max[flavor])}), not the Hub set's max "
                        f"{_max_text(hub_set.caps[flavor])}; under the portal's layering the "
                        "Hub's cap holds for them too"
                    )


def flavor_file_plan(*, data: Any, hubs: Mapping[str, bool]) -> ImportPlan:
    """The entries an Outpost gets from the flavors file ``data`` (as YAML loads it), and
    where its meaning differs (see the module docstring).

    ``hubs``: every Hub of the portal, by name, and whether it may use the Outpost. Hub sets
    are matched against these; a Hub the file names that is not among them fails the import.
    Raises FlavorFileError naming the key path at fault.
    """
    planner = _Planner(data, hubs)
    planner.flavors()
    planner.hub_sets_plan()
    planner.max_counted_per_hub()
    planner.user_sets_plan()
    return planner.plan
