"""Operating the portal: declarative configuration, and rotation of the encryption keys.

Declarative configuration: Outposts, their flavors and Hubs from one YAML document.

``config_apply`` upserts what the document names and is idempotent: applying the same file
twice changes nothing the second time. Rows the document does not name are treated so that
nothing in use is lost:

- Outposts and Hubs absent from the file are left alone (they may carry servers and history);
  the summary lists them so an operator sees the drift.
- A flavor absent from its Outpost's list is deleted if no server ever used it. One that
  servers used is kept, because servers reference it as history, and closed (``max: 0``) so
  no new start can pick it; the summary says which.

The format is documented in README.md ("apply_config format"). Every field has the name of
the model field it sets; fields left out of an entry take the model's default (the file is the
truth for what it names), e.g.::

    outposts:
      - slug: hpc
        spawner_class: batchspawner.SlurmSpawner
        allowed_overrides: [image]           # misc traits a Hub may set
        allowed_user_options: [partition]    # user_options keys the spawner gets
        min_system_uid: 1000                 # refuse users whose account is below; null = off
    hubs:
      - name: hub1
        secret_env: HUB1_SECRET
        outposts: [hpc]
        callback_url_prefixes: ["https://hub.example.org/hub/api/"]   # where calls may go
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import models, transaction
from django.db.models import Value
from django.db.models.functions import Cast

from flavors.models import Flavor
from outposts.hubs import hub_create, hub_update
from outposts.models import Hub, Outpost
from portal.crypto import EncryptedJSONField, reencrypt_text

OUTPOST_FIELDS = {
    "slug",
    "name",
    "default",
    "state",
    "spawner_class",
    "spawner_config",
    "allowed_overrides",
    "allowed_user_options",
    "min_system_uid",
    "max_servers_per_user",
    "queue",
    "poll_interval",
    "start_timeout",
    "unknown_grace",
    "flavors",
}
FLAVOR_FIELDS = set(Flavor.SETTINGS)
HUB_FIELDS = {"name", "secret", "secret_env", "outposts", "active", "callback_url_prefixes"}
RUNTIME_UNITS = {"days", "hours", "minutes", "seconds"}


class ConfigError(Exception):
    """The document is invalid; the message names the entry and the field."""


@dataclass
class ConfigSummary:
    """What config_apply did, one line per row, in the order it happened."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            *(f"created {what}" for what in self.created),
            *(f"updated {what}" for what in self.updated),
            *(f"unchanged {what}" for what in self.unchanged),
            *(f"deleted {what}" for what in self.deleted),
            *(f"note: {what}" for what in self.notes),
        ]


def _seconds(where: str, name: str, value: Any) -> timedelta:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{where}: field '{name}' must be a positive number of seconds")
    return timedelta(seconds=value)


def _runtime(where: str, value: Any) -> timedelta | None:
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


def _check_keys(where: str, entry: Any, allowed: set[str], required: set[str]) -> None:
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


def _list(where: str, data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key) or []
    if not isinstance(value, list):
        raise ConfigError(f"{where}'{key}' must be a list")
    return value


def _snapshot(obj: models.Model, names: list[str]) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in names}


def _config_error(where: str, error: ValidationError) -> ConfigError:
    details = "; ".join(
        f"field '{name}': {' '.join(messages)}" for name, messages in error.message_dict.items()
    )
    return ConfigError(f"{where}: {details}")


def _save(
    obj: models.Model,
    where: str,
    names: list[str],
    before: dict[str, Any] | None,
    summary: ConfigSummary,
) -> None:
    """Validate with the model's own rules, save if anything changed, and record what happened."""
    try:
        obj.full_clean()
    except ValidationError as error:
        raise _config_error(where, error) from None
    if before is None:
        obj.save()
        summary.created.append(where)
    elif _snapshot(obj, names) != before:
        obj.save()
        summary.updated.append(where)
    else:
        summary.unchanged.append(where)


def _apply_outpost(
    where: str, entry: dict[str, Any], summary: ConfigSummary
) -> tuple[Outpost, list[dict[str, Any]]]:
    defaults = Outpost()
    values: dict[str, Any] = {
        "name": entry.get("name", entry["slug"]),
        "is_default": bool(entry.get("default", False)),
        "state": entry.get("state", defaults.state),
        "spawner_class": entry.get("spawner_class", defaults.spawner_class),
        "spawner_config": entry.get("spawner_config") or {},
        "allowed_overrides": entry.get("allowed_overrides") or [],
        "allowed_user_options": entry.get("allowed_user_options") or [],
        # null switches the check off, so only a missing key means the default.
        "min_system_uid": entry.get("min_system_uid", defaults.min_system_uid),
        "max_servers_per_user": entry.get("max_servers_per_user"),
        "queue": entry.get("queue") or "",
        "poll_interval": defaults.poll_interval,
        "start_timeout": defaults.start_timeout,
        "unknown_grace": defaults.unknown_grace,
    }
    for name in ("poll_interval", "start_timeout", "unknown_grace"):
        if entry.get(name) is not None:
            values[name] = _seconds(where, name, entry[name])
    outpost = Outpost.objects.filter(slug=entry["slug"]).first()
    before = None if outpost is None else _snapshot(outpost, list(values))
    if outpost is None:
        outpost = Outpost(slug=entry["slug"])
    for name, value in values.items():
        setattr(outpost, name, value)
    _save(outpost, where, list(values), before, summary)
    flavors = entry.get("flavors") or []
    if not isinstance(flavors, list):
        raise ConfigError(f"{where}: field 'flavors' must be a list")
    return outpost, flavors


def _apply_flavors(
    outpost: Outpost, where: str, entries: list[Any], summary: ConfigSummary
) -> None:
    named: set[str] = set()
    for index, entry in enumerate(entries):
        _check_keys(f"{where} flavors[{index}]", entry, FLAVOR_FIELDS, {"name"})
        here = f"{where} flavor {entry['name']!r}"
        if entry["name"] in named:
            raise ConfigError(f"{here}: named twice")
        named.add(entry["name"])
        values: dict[str, Any] = {
            "display_name": entry.get("display_name", entry["name"]),
            "description": entry.get("description") or "",
            "weight": entry.get("weight", 0),
            "max": entry.get("max"),
            "max_per_user": entry.get("max_per_user"),
            "runtime": _runtime(here, entry.get("runtime")),
            "resources": entry.get("resources") or {},
        }
        flavor = Flavor.objects.filter(outpost=outpost, name=entry["name"]).first()
        before = None if flavor is None else _snapshot(flavor, list(values))
        if flavor is None:
            flavor = Flavor(outpost=outpost, name=entry["name"])
        for name, value in values.items():
            setattr(flavor, name, value)
        _save(flavor, here, list(values), before, summary)

    for flavor in Flavor.objects.filter(outpost=outpost).exclude(name__in=named):
        here = f"{where} flavor {flavor.name!r}"
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


def _apply_hub(where: str, entry: dict[str, Any], summary: ConfigSummary) -> None:
    secret: str | None = entry.get("secret")
    if "secret" in entry and "secret_env" in entry:
        raise ConfigError(f"{where}: give 'secret' or 'secret_env', not both")
    if "secret_env" in entry:
        secret = os.environ.get(str(entry["secret_env"]))
        if not secret:
            raise ConfigError(
                f"{where}: field 'secret_env': environment variable {entry['secret_env']} "
                "is not set"
            )
    if secret is not None and (not isinstance(secret, str) or not secret):
        raise ConfigError(f"{where}: field 'secret' must be a non-empty string")
    slugs = entry.get("outposts") or []
    if not isinstance(slugs, list):
        raise ConfigError(f"{where}: field 'outposts' must be a list of Outpost slugs")
    outposts = list(Outpost.objects.filter(slug__in=slugs))
    missing = sorted(set(slugs) - {outpost.slug for outpost in outposts})
    if missing:
        raise ConfigError(f"{where}: field 'outposts': no Outpost {', '.join(missing)}")

    settings = {
        "is_active": bool(entry.get("active", True)),
        # Validated by Hub.clean(): http(s) URL prefixes only.
        "callback_url_prefixes": entry.get("callback_url_prefixes", []),
    }
    hub = Hub.objects.filter(name=entry["name"]).first()
    try:
        if hub is not None:
            changed = hub_update(hub=hub, secret=secret, outposts=outposts, **settings)
            (summary.updated if changed else summary.unchanged).append(where)
        elif secret is None:
            raise ConfigError(f"{where}: a new Hub needs 'secret' or 'secret_env'")
        else:
            hub_create(name=entry["name"], secret=secret, outposts=outposts, **settings)
            summary.created.append(where)
    except ValidationError as error:
        raise _config_error(where, error) from None


def config_apply(*, data: dict[str, Any], dry_run: bool = False) -> ConfigSummary:
    """Upsert the Outposts (with flavors) and Hubs ``data`` names, all or nothing.

    Validates every row with its model's ``full_clean``. Raises ConfigError naming the entry
    and field on the first problem; nothing is written then. With ``dry_run`` everything is
    validated and reported, then rolled back.
    """
    if not isinstance(data, dict):
        raise ConfigError("the document must be a mapping with 'outposts' and/or 'hubs'")
    unknown = sorted(set(data) - {"outposts", "hubs"})
    if unknown:
        raise ConfigError(f"unknown top-level key {', '.join(repr(key) for key in unknown)}")
    outpost_entries = _list("", data, "outposts")
    hub_entries = _list("", data, "hubs")
    summary = ConfigSummary()

    with transaction.atomic():
        slugs: list[str] = []
        for index, entry in enumerate(outpost_entries):
            _check_keys(f"outposts[{index}]", entry, OUTPOST_FIELDS, {"slug"})
            if entry["slug"] in slugs:
                raise ConfigError(f"outposts[{index}] (slug {entry['slug']!r}): named twice")
            slugs.append(entry["slug"])
        defaults = [entry["slug"] for entry in outpost_entries if entry.get("default")]
        if len(defaults) > 1:
            raise ConfigError(f"only one Outpost may be the default; the file marks {defaults}")
        if defaults:
            # The file moves the default: release it first so the unique constraint holds.
            Outpost.objects.filter(is_default=True).exclude(slug=defaults[0]).update(
                is_default=False
            )

        for entry in outpost_entries:
            outpost, flavors = _apply_outpost(f"Outpost {entry['slug']!r}", entry, summary)
            _apply_flavors(outpost, f"Outpost {outpost.slug!r}", flavors, summary)

        names: list[str] = []
        for index, entry in enumerate(hub_entries):
            _check_keys(f"hubs[{index}]", entry, HUB_FIELDS, {"name"})
            if entry["name"] in names:
                raise ConfigError(f"hubs[{index}] (name {entry['name']!r}): named twice")
            names.append(entry["name"])
            _apply_hub(f"Hub {entry['name']!r}", entry, summary)

        for slug in Outpost.objects.exclude(slug__in=slugs).values_list("slug", flat=True):
            summary.notes.append(f"Outpost {slug!r} is not in the file: left as it is")
        for name in Hub.objects.exclude(name__in=names).values_list("name", flat=True):
            summary.notes.append(f"Hub {name!r} is not in the file: left as it is")

        if dry_run:
            transaction.set_rollback(True)
    return summary


# Key rotation ------------------------------------------------------------------------------


def encrypted_fields() -> list[tuple[type[models.Model], str]]:
    """Every (model, field name) stored with the key ring, over all installed apps."""
    from django.apps import apps

    return [
        (model, model_field.name)
        for model in apps.get_models()
        for model_field in model._meta.concrete_fields
        if isinstance(model_field, EncryptedJSONField)
    ]


def encrypted_values_rotate(*, batch_size: int = 500) -> dict[str, int]:
    """Re-encrypt every stored EncryptedJSONField value with the newest key; returns counts.

    Reads the raw tokens (never the decrypted values), so the plaintext is not re-serialised.
    Tokens the newest key already decrypts are skipped, which makes a rerun after an
    interruption cheap. Each batch is one transaction with its rows locked, so a concurrent
    write is never overwritten with an older value. Raises ImproperlyConfigured (from the
    key ring) when a value's key is missing from PORTAL_ENCRYPTION_KEYS.
    """
    newest = Fernet(settings.ENCRYPTION_KEYS[0])
    counts: dict[str, int] = {}
    for model, name in encrypted_fields():
        label = f"{model._meta.label}.{name}"
        counts[label] = 0
        raw = Cast(name, output_field=models.TextField())
        last_pk: Any = None
        while True:
            with transaction.atomic():
                rows = model._default_manager.exclude(**{f"{name}__isnull": True}).order_by("pk")
                if last_pk is not None:
                    rows = rows.filter(pk__gt=last_pk)
                batch = list(
                    rows.select_for_update()
                    .annotate(raw_token=raw)
                    .values_list("pk", "raw_token")[:batch_size]
                )
                for pk, token in batch:
                    if not token:
                        continue
                    try:
                        newest.decrypt(token.encode())
                        continue
                    except InvalidToken:
                        pass
                    try:
                        rotated = reencrypt_text(token)
                    except InvalidToken as error:
                        raise ImproperlyConfigured(
                            f"Cannot decrypt {label} of row {pk}: "
                            "its key is not in PORTAL_ENCRYPTION_KEYS"
                        ) from error
                    model._default_manager.filter(pk=pk).update(
                        **{name: Value(rotated, output_field=models.TextField())}
                    )
                    counts[label] += 1
            if len(batch) < batch_size:
                break
            last_pk = batch[-1][0]
    return counts
