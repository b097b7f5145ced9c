"""Writing an Outpost's flavors, Hub policies and user rules from a declarative description.

Two commands write through here, so that one set of rules holds for both:

- ``apply_config`` (outposts/provisioning.py), whose Outposts carry ``flavors``,
  ``hub_policies`` and ``user_rules`` in the portal's own format (docs/configuration.md);
- ``import_flavors`` (``flavor_file_import``), which reads a flavors file of the existing
  Outpost service as those same entries (flavors/imports.py) and writes them.

The description is the truth for the Outpost it is given for. Entries are upserted, so
writing the same description twice changes nothing the second time; every row is checked
with its model's ``full_clean``, as in the admin. Rows it does not name:

- a flavor is deleted if no server ever used it; one that servers used is kept, because they
  reference it as history, and closed (``max: 0``) so no new start can pick it;
- Hub policies and user rules are deleted.

``ConfigError`` and ``ConfigSummary`` live here because both commands report through them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import Count, Q

from flavors.flavor_file import FlavorFileError
from flavors.imports import ImportPlan, flavor_file_plan
from flavors.models import Flavor, HubPolicy, UserRule
from flavors.services import flavors_changed
from outposts.models import Hub, Outpost, Server
from outposts.selectors import outpost_for_update

FLAVOR_FIELDS = set(Flavor.SETTINGS)
HUB_POLICY_FIELDS = {"hub", "flavor", "allowed", "cap", "overrides"}
USER_RULE_FIELDS = {
    "name",
    "attributes",
    "weight",
    "negate",
    "forbidden",
    "hubs",
    "flavors",
    "overrides",
}
RUNTIME_UNITS = {"days", "hours", "minutes", "seconds"}


class ConfigError(Exception):
    """The document is invalid; the message names the entry and the field."""


@dataclass
class ConfigSummary:
    """What was written, one line per row, in the order it happened."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def changes(self) -> int:
        """How many rows were created, updated or deleted."""
        return len(self.created) + len(self.updated) + len(self.deleted)

    def lines(self, *, unchanged: bool = True) -> list[str]:
        return [
            *(f"created {what}" for what in self.created),
            *(f"updated {what}" for what in self.updated),
            *(f"unchanged {what}" for what in (self.unchanged if unchanged else ())),
            *(f"deleted {what}" for what in self.deleted),
            *(f"note: {what}" for what in self.notes),
        ]


# Validation and saving of one row ----------------------------------------------------------


def check_keys(where: str, entry: Any, allowed: set[str], required: set[str]) -> None:
    """``entry`` is a mapping with only ``allowed`` keys and every ``required`` one."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a mapping")
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown field {', '.join(repr(key) for key in unknown)} "
            f"(known: {', '.join(sorted(allowed))})"
        )
    for key in sorted(required):
        if key not in entry:
            raise ConfigError(f"{where}: field '{key}' is required")


def snapshot(obj: models.Model, names: Sequence[str]) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in names}


def config_error(where: str, error: ValidationError) -> ConfigError:
    details = "; ".join(
        f"field '{name}': {' '.join(messages)}" for name, messages in error.message_dict.items()
    )
    return ConfigError(f"{where}: {details}")


def row_save(
    obj: models.Model,
    *,
    label: str,
    source: str | None = None,
    names: Sequence[str],
    before: dict[str, Any] | None,
    summary: ConfigSummary,
    related: dict[str, Any] | None = None,
    then: Callable[[], None] | None = None,
) -> None:
    """Validate ``obj`` with its model's rules, save it if any of ``names`` (or of
    ``related``, what ``then`` sets after the save: many-to-many sets) differs from
    ``before`` (None: it is new), and record what happened as ``label``. ConfigError names
    ``source`` (where in the document), or else ``label``."""
    try:
        obj.full_clean()
    except ValidationError as error:
        raise config_error(source or label, error) from None
    after = {**snapshot(obj, names), **(related or {})}  # as cleaned: "5" is 5
    if before is not None and after == before:
        summary.unchanged.append(label)
        return
    obj.save()
    if then is not None:
        then()
    if before is None:
        summary.created.append(label)
    else:
        changed = [name for name in after if after[name] != before.get(name)]
        summary.updated.append(f"{label} ({', '.join(changed)})")


def runtime_parse(where: str, value: Any) -> timedelta | None:
    """A flavor's runtime as apply_config writes it ({hours: 2}), or None for no limit."""
    if value is None:
        return None
    if not isinstance(value, dict) or not value or not set(value) <= RUNTIME_UNITS:
        raise ConfigError(
            f"{where}: field 'runtime' must be like {{hours: 2}} or {{minutes: 30}} "
            f"(units: {', '.join(sorted(RUNTIME_UNITS))}), or null"
        )
    for unit, amount in value.items():
        if isinstance(amount, bool) or not isinstance(amount, int | float) or amount < 0:
            raise ConfigError(f"{where}: field 'runtime.{unit}' must be a number >= 0")
    return timedelta(**value)


def _names(where: str, entry: Mapping[str, Any], key: str) -> list[str]:
    value = entry.get(key) or []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{where}: field '{key}' must be a list of names")
    return value


def _flag(where: str, entry: Mapping[str, Any], key: str, default: bool) -> bool:
    value = entry.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: field '{key}' must be true or false")
    return value


def _source(sources: Sequence[str] | None, index: int) -> str | None:
    return None if sources is None else sources[index]


# The writers -------------------------------------------------------------------------------


def flavors_apply(
    *,
    outpost: Outpost,
    entries: Sequence[Any],
    label: str,
    summary: ConfigSummary,
    sources: Sequence[str] | None = None,
) -> None:
    """Upsert ``outpost``'s flavors to ``entries`` (Flavor.SETTINGS; ``runtime`` as
    {hours: 2}); delete or close the others (module docstring). ``label`` names the Outpost
    in the summary; ``sources`` (one per entry) where each entry is in the document."""
    named: set[str] = set()
    for index, entry in enumerate(entries):
        source = _source(sources, index)
        check_keys(source or f"{label} flavors[{index}]", entry, FLAVOR_FIELDS, {"name"})
        here = f"{label} flavor {entry['name']!r}"
        if entry["name"] in named:
            raise ConfigError(f"{source or here}: named twice")
        named.add(entry["name"])
        values: dict[str, Any] = {
            "display_name": entry.get("display_name", entry["name"]),
            "description": entry.get("description") or "",
            "weight": entry.get("weight", 0),
            "max": entry.get("max"),
            "max_per_user": entry.get("max_per_user"),
            "runtime": runtime_parse(source or here, entry.get("runtime")),
            "resources": entry.get("resources") or {},
        }
        flavor = Flavor.objects.filter(outpost=outpost, name=entry["name"]).first()
        before = None if flavor is None else snapshot(flavor, list(values))
        if flavor is None:
            flavor = Flavor(outpost=outpost, name=entry["name"])
        for name, value in values.items():
            setattr(flavor, name, value)
        row_save(
            flavor, label=here, source=source, names=list(values), before=before, summary=summary
        )

    for flavor in Flavor.objects.filter(outpost=outpost).exclude(name__in=named):
        here = f"{label} flavor {flavor.name!r}"
        used = flavor.servers.count()
        if not used:
            flavor.delete()
            summary.deleted.append(f"{here} (not in the file, never used)")
        elif flavor.max != 0:
            flavor.max = 0
            flavor.save(update_fields=["max"])
            summary.notes.append(
                f"{here} is not in the file but {used} server(s) used it: kept and closed (max 0)"
            )


def _hub(where: str, name: str) -> Hub:
    hub = Hub.objects.filter(name=name).first()
    if hub is None:
        raise ConfigError(f"{where}: no Hub {name!r} in the portal or the file")
    return hub


def _flavors_of(outpost: Outpost) -> dict[str, Flavor]:
    return {flavor.name: flavor for flavor in Flavor.objects.filter(outpost=outpost)}


def hub_policies_apply(
    *,
    outpost: Outpost,
    entries: Sequence[Any],
    label: str,
    summary: ConfigSummary,
    sources: Sequence[str] | None = None,
) -> None:
    """Upsert ``outpost``'s Hub policies to ``entries`` ({hub, flavor, allowed, cap,
    overrides}, by Hub and flavor name) and delete the others. Its Hubs and flavors must exist
    (write flavors and Hubs first). A policy of a Hub not granted the Outpost is kept, and
    said: it applies once the Hub is granted it."""
    flavors = _flavors_of(outpost)
    kept: list[int] = []
    seen: set[tuple[str, str]] = set()
    for index, entry in enumerate(entries):
        source = _source(sources, index)
        check_keys(
            source or f"{label} hub_policies[{index}]", entry, HUB_POLICY_FIELDS, {"hub", "flavor"}
        )
        here = f"{label} policy of Hub {entry['hub']!r} for {entry['flavor']!r}"
        where = source or here
        if not isinstance(entry["hub"], str) or not isinstance(entry["flavor"], str):
            raise ConfigError(f"{where}: fields 'hub' and 'flavor' are names")
        if (entry["hub"], entry["flavor"]) in seen:
            raise ConfigError(f"{where}: named twice")
        seen.add((entry["hub"], entry["flavor"]))
        hub = _hub(f"{where}: field 'hub'", entry["hub"])
        flavor = flavors.get(entry["flavor"])
        if flavor is None:
            raise ConfigError(
                f"{where}: field 'flavor': Outpost {outpost.slug!r} has no flavor "
                f"{entry['flavor']!r}"
            )
        values = {
            "allowed": _flag(where, entry, "allowed", True),
            "cap": entry.get("cap"),
            "overrides": {} if entry.get("overrides") is None else entry["overrides"],
        }
        policy = HubPolicy.objects.filter(outpost=outpost, hub=hub, flavor=flavor).first()
        before = None if policy is None else snapshot(policy, list(values))
        if policy is None:
            policy = HubPolicy(outpost=outpost, hub=hub, flavor=flavor)
        for name, value in values.items():
            setattr(policy, name, value)
        row_save(
            policy, label=here, source=source, names=list(values), before=before, summary=summary
        )
        kept.append(policy.pk)
    for policy in (
        HubPolicy.objects.filter(outpost=outpost)
        .exclude(pk__in=kept)
        .select_related("hub", "flavor")
    ):
        summary.deleted.append(
            f"{label} policy of Hub {policy.hub.name!r} for {policy.flavor.name!r} "
            "(not in the file)"
        )
        policy.delete()
    granted = set(outpost.hubs.values_list("name", flat=True))
    for name in sorted({hub for hub, _ in seen} - granted):
        summary.notes.append(
            f"{label}: Hub {name!r} has policies but may not use the Outpost: they apply once "
            "it is granted it"
        )


def _rule_relate(rule: UserRule, hubs: list[Hub], flavors: list[Flavor]) -> None:
    rule.hubs.set(hubs)
    rule.flavors.set(flavors)


def user_rules_apply(
    *,
    outpost: Outpost,
    entries: Sequence[Any],
    label: str,
    summary: ConfigSummary,
    sources: Sequence[str] | None = None,
) -> None:
    """Upsert ``outpost``'s user rules to ``entries`` ({name, attributes, weight, negate,
    forbidden, hubs, flavors, overrides}; list order is the rules' order) and delete the
    others. Hubs and flavors are named; they must exist (write them first)."""
    flavors = _flavors_of(outpost)
    named: list[str] = []
    for index, entry in enumerate(entries):
        source = _source(sources, index)
        check_keys(source or f"{label} user_rules[{index}]", entry, USER_RULE_FIELDS, {"name"})
        here = f"{label} user rule {entry['name']!r}"
        where = source or here
        if entry["name"] in named:
            raise ConfigError(f"{where}: named twice")
        named.append(entry["name"])
        hubs = [_hub(f"{where}: field 'hubs'", name) for name in _names(where, entry, "hubs")]
        missing = [name for name in _names(where, entry, "flavors") if name not in flavors]
        if missing:
            raise ConfigError(
                f"{where}: field 'flavors': Outpost {outpost.slug!r} has no flavor "
                f"{', '.join(repr(name) for name in missing)}"
            )
        rule_flavors = [flavors[name] for name in _names(where, entry, "flavors")]
        values = {
            "position": index,
            "attributes": {} if entry.get("attributes") is None else entry["attributes"],
            "weight": entry.get("weight", 0),
            "negate": _flag(where, entry, "negate", False),
            "forbidden": _flag(where, entry, "forbidden", False),
            "overrides": {} if entry.get("overrides") is None else entry["overrides"],
        }
        rule = UserRule.objects.filter(outpost=outpost, name=entry["name"]).first()
        before = None
        if rule is None:
            rule = UserRule(outpost=outpost, name=entry["name"])
        else:
            before = {
                **snapshot(rule, list(values)),
                "hubs": sorted(hub.name for hub in rule.hubs.all()),
                "flavors": sorted(flavor.name for flavor in rule.flavors.all()),
            }
        for name, value in values.items():
            setattr(rule, name, value)
        row_save(
            rule,
            label=here,
            source=source,
            names=list(values),
            before=before,
            summary=summary,
            related={
                "hubs": sorted(hub.name for hub in hubs),
                "flavors": sorted(flavor.name for flavor in rule_flavors),
            },
            then=partial(_rule_relate, rule, hubs, rule_flavors),
        )
    for rule in UserRule.objects.filter(outpost=outpost).exclude(name__in=named):
        summary.deleted.append(f"{label} user rule {rule.name!r} (not in the file)")
        rule.delete()


# import_flavors ----------------------------------------------------------------------------


@dataclass
class FlavorImport:
    """What ``flavor_file_import`` did (``summary``) and what the file means differently
    under the portal's layering (``plan.differences``, ``plan.notes``)."""

    plan: ImportPlan
    summary: ConfigSummary


def flavor_file_import(*, outpost: Outpost, data: Any, dry_run: bool = False) -> FlavorImport:
    """Make ``outpost``'s flavors, Hub policies and user rules what the existing service's
    flavors file ``data`` says (flavors/imports.py), all or nothing.

    The file is the truth for the Outpost: rows it does not name are removed (module
    docstring), but a flavor an active server uses cannot be: the import fails then. After a
    real import that changed anything, the Hubs granted the Outpost are sent their new flavor
    table (flavors_changed). Raises ConfigError naming the file's key path at fault; nothing
    is written then. With ``dry_run`` everything is checked and reported, then rolled back.
    """
    granted = set(outpost.hubs.values_list("name", flat=True))
    hubs = {name: name in granted for name in Hub.objects.values_list("name", flat=True)}
    try:
        plan = flavor_file_plan(data=data, hubs=hubs)
    except FlavorFileError as error:
        raise ConfigError(str(error)) from None
    label = f"Outpost {outpost.slug!r}"
    summary = ConfigSummary()
    with transaction.atomic():
        # Admissions lock the Outpost too: none counts against rows half imported.
        outpost = outpost_for_update(outpost=outpost)
        names = [planned.entry["name"] for planned in plan.flavors]
        busy = (
            Flavor.objects.filter(outpost=outpost)
            .exclude(name__in=names)
            .annotate(active=Count("servers", filter=~Q(servers__status__in=Server.ENDED)))
            .filter(active__gt=0)
        )
        flavor = busy.first()
        if flavor is not None:
            raise ConfigError(
                f"flavors: {flavor.name} is not in the file, but {flavor.active} active "
                f"server(s) use it on Outpost {outpost.slug!r}; keep it in the file until they "
                "have ended"
            )
        for writer, planned in (
            (flavors_apply, plan.flavors),
            (hub_policies_apply, plan.hub_policies),
            (user_rules_apply, plan.user_rules),
        ):
            writer(
                outpost=outpost,
                entries=[item.entry for item in planned],
                sources=[item.source for item in planned],
                label=label,
                summary=summary,
            )
        if dry_run:
            transaction.set_rollback(True)
        elif summary.changes:
            flavors_changed(outpost=outpost)
    return FlavorImport(plan=plan, summary=summary)
