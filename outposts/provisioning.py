"""Operating the portal: declarative configuration, and rotation of the encryption keys.

Declarative configuration: Outposts (with their flavors, Hub policies and user rules) and
Hubs from one YAML document.

``config_apply`` upserts what the document names and is idempotent: applying the same file
twice changes nothing the second time. Rows the document does not name are treated so that
nothing in use is lost:

- Outposts and Hubs absent from the file are left alone (they may carry servers and history);
  the summary lists them so an operator sees the drift.
- An Outpost's flavors, Hub policies and user rules are what its entry lists (none when a
  list is left out), written by flavors/provisioning.py, which import_flavors writes through
  too: a flavor absent from its Outpost's list is deleted if no server ever used it; one that
  servers used is kept, because servers reference it as history, and closed (``max: 0``) so
  no new start can pick it; the summary says which. Absent policies and rules are deleted.

The format is documented in README.md ("apply_config format") and docs/configuration.md
(flavors, Hub policies, user rules). Every field has the name of
the model field it sets; fields left out of an entry take the model's default (the file is the
truth for what it names), e.g.::

    outposts:
      - slug: hpc
        spawner_class: batchspawner.SlurmSpawner
        allowed_overrides: [default_url]     # misc traits a Hub may set
        allowed_override_values: {default_url: ["/lab*"]}  # and to what
        allowed_user_options: [partition]    # user_options keys the spawner gets
        allowed_env: [TZ, "SITE_*"]          # env the spawner gets besides JUPYTER(HUB)_*
        min_system_uid: 1000                 # refuse users whose account is below; null = off
        server_reports_address: true         # servers run through outpost-start-server
        allowed_node_patterns: ["node*.hpc.example.org", "10.1.0.0/16"]
        allowed_port_min: 20000              # the ports they may report
        unix_user_rule: template             # Slurm: the job's account (name, template, table)
        unix_user_template: "hpc_{name}"
        flavors: [{name: large, max: 10, runtime: {hours: 2}}]
        hub_policies: [{hub: hub1, flavor: large, cap: 5}]
        user_rules: [{name: staff, attributes: {groups: [staff]}, flavors: [large]}]
        ssh: {reach: agent, jump_host: login.hpc.example.org, user: tunnel,
              key_path: /etc/outpost/tunnel_key, known_hosts: "..."}   # docs/tunnels.md
    hubs:
      - name: hub1
        secret_env: HUB1_SECRET
        outposts: [hpc]
        callback_url_prefixes: ["https://hub.example.org/hub/api/"]   # where calls may go
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import models, transaction
from django.db.models import Value
from django.db.models.functions import Cast

from flavors.provisioning import (
    ConfigError,
    ConfigSummary,
    check_keys,
    config_error,
    flavors_apply,
    hub_policies_apply,
    row_save,
    snapshot,
    user_rules_apply,
)
from flavors.services import flavors_changed
from outposts.hubs import hub_create, hub_update
from outposts.models import Hub, Outpost
from portal.crypto import EncryptedJSONField, reencrypt_text
from tunnels.provisioning import outpost_ssh_apply

OUTPOST_FIELDS = {
    "slug",
    "name",
    "default",
    "state",
    "state_message",
    "spawner_class",
    "spawner_config",
    "allowed_overrides",
    "allowed_override_values",
    "allowed_user_options",
    "allowed_env",
    "min_system_uid",
    "unix_user_rule",
    "unix_user_template",
    "unix_user_table",
    "max_servers_per_user",
    "queue",
    "poll_interval",
    "start_timeout",
    "unknown_grace",
    "server_reports_address",
    "server_callback_url",
    "allowed_node_patterns",
    "allowed_port_min",
    "allowed_port_max",
    "flavors",
    "hub_policies",
    "user_rules",
    "ssh",
}
HUB_FIELDS = {
    "name",
    "secret",
    "secret_env",
    "outposts",
    "active",
    "callback_url_prefixes",
    "may_restart_tunnels",
    "recreate_forward_token_env",
}


def _seconds(where: str, name: str, value: Any) -> timedelta:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{where}: field '{name}' must be a positive number of seconds")
    return timedelta(seconds=value)


def _list(where: str, data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key) or []
    if not isinstance(value, list):
        raise ConfigError(f"{where}'{key}' must be a list")
    return value


def _apply_outpost(where: str, entry: dict[str, Any], summary: ConfigSummary) -> Outpost:
    defaults = Outpost()
    values: dict[str, Any] = {
        "name": entry.get("name", entry["slug"]),
        "is_default": bool(entry.get("default", False)),
        "state": entry.get("state", defaults.state),
        "state_message": entry.get("state_message") or "",
        "spawner_class": entry.get("spawner_class", defaults.spawner_class),
        "spawner_config": entry.get("spawner_config") or {},
        "allowed_overrides": entry.get("allowed_overrides") or [],
        "allowed_override_values": entry.get("allowed_override_values") or {},
        "allowed_user_options": entry.get("allowed_user_options") or [],
        # Validated by Outpost.clean(): names or glob patterns of environment variables.
        "allowed_env": entry.get("allowed_env") or [],
        # null switches the check off, so only a missing key means the default.
        "min_system_uid": entry.get("min_system_uid", defaults.min_system_uid),
        "unix_user_rule": entry.get("unix_user_rule") or defaults.unix_user_rule,
        "unix_user_template": entry.get("unix_user_template") or "",
        "unix_user_table": entry.get("unix_user_table") or {},
        "max_servers_per_user": entry.get("max_servers_per_user"),
        "queue": entry.get("queue") or "",
        "poll_interval": defaults.poll_interval,
        "start_timeout": defaults.start_timeout,
        "unknown_grace": defaults.unknown_grace,
        "server_reports_address": bool(entry.get("server_reports_address", False)),
        "server_callback_url": entry.get("server_callback_url") or "",
        "allowed_node_patterns": entry.get("allowed_node_patterns") or [],
        "allowed_port_min": entry.get("allowed_port_min", defaults.allowed_port_min),
        "allowed_port_max": entry.get("allowed_port_max", defaults.allowed_port_max),
    }
    for name in ("poll_interval", "start_timeout", "unknown_grace"):
        if entry.get(name) is not None:
            values[name] = _seconds(where, name, entry[name])
    outpost = Outpost.objects.filter(slug=entry["slug"]).first()
    before = None if outpost is None else snapshot(outpost, list(values))
    if outpost is None:
        outpost = Outpost(slug=entry["slug"])
    for name, value in values.items():
        setattr(outpost, name, value)
    row_save(outpost, label=where, names=list(values), before=before, summary=summary)
    return outpost


def _entries(where: str, entry: dict[str, Any], key: str) -> list[Any]:
    value = entry.get(key) or []
    if not isinstance(value, list):
        raise ConfigError(f"{where}: field '{key}' must be a list")
    return value


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
    recreate_forward_token = None
    if "recreate_forward_token_env" in entry:
        recreate_forward_token = os.environ.get(str(entry["recreate_forward_token_env"]))
        if not recreate_forward_token:
            raise ConfigError(
                f"{where}: field 'recreate_forward_token_env': environment variable "
                f"{entry['recreate_forward_token_env']} is not set"
            )
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
        "may_restart_tunnels": bool(entry.get("may_restart_tunnels", False)),
    }
    hub = Hub.objects.filter(name=entry["name"]).first()
    try:
        if hub is not None:
            changed = hub_update(
                hub=hub,
                secret=secret,
                outposts=outposts,
                recreate_forward_token=recreate_forward_token,
                **settings,
            )
            (summary.updated if changed else summary.unchanged).append(where)
        elif secret is None:
            raise ConfigError(f"{where}: a new Hub needs 'secret' or 'secret_env'")
        else:
            hub_create(
                name=entry["name"],
                secret=secret,
                outposts=outposts,
                recreate_forward_token=recreate_forward_token,
                **settings,
            )
            summary.created.append(where)
    except ValidationError as error:
        raise config_error(where, error) from None


def config_apply(*, data: dict[str, Any], dry_run: bool = False) -> ConfigSummary:
    """Upsert the Outposts (with flavors, Hub policies and user rules) and Hubs ``data``
    names, all or nothing.

    Validates every row with its model's ``full_clean``. Raises ConfigError naming the entry
    and field on the first problem; nothing is written then. With ``dry_run`` everything is
    validated and reported, then rolled back. Otherwise the Hubs of each Outpost whose
    settings, flavors, policies or rules changed are sent their new flavor table.
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
            check_keys(f"outposts[{index}]", entry, OUTPOST_FIELDS, {"slug"})
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

        outposts: list[tuple[Outpost, dict[str, Any], int]] = []
        for entry in outpost_entries:
            where = f"Outpost {entry['slug']!r}"
            changes = summary.changes
            outpost = _apply_outpost(where, entry, summary)
            flavors = _entries(where, entry, "flavors")
            flavors_apply(outpost=outpost, entries=flavors, label=where, summary=summary)
            outpost_ssh_apply(outpost=outpost, entry=entry.get("ssh"), label=where, summary=summary)
            outposts.append((outpost, entry, summary.changes - changes))

        names: list[str] = []
        for index, entry in enumerate(hub_entries):
            check_keys(f"hubs[{index}]", entry, HUB_FIELDS, {"name"})
            if entry["name"] in names:
                raise ConfigError(f"hubs[{index}] (name {entry['name']!r}): named twice")
            names.append(entry["name"])
            _apply_hub(f"Hub {entry['name']!r}", entry, summary)

        # Policies and rules name Hubs: written once the file's Hubs exist.
        changed: list[Outpost] = []
        for outpost, entry, changes in outposts:
            where = f"Outpost {outpost.slug!r}"
            before = summary.changes
            for key, writer in (
                ("hub_policies", hub_policies_apply),
                ("user_rules", user_rules_apply),
            ):
                entries = _entries(where, entry, key)
                writer(outpost=outpost, entries=entries, label=where, summary=summary)
            if changes or summary.changes - before:
                changed.append(outpost)

        for slug in Outpost.objects.exclude(slug__in=slugs).values_list("slug", flat=True):
            summary.notes.append(f"Outpost {slug!r} is not in the file: left as it is")
        for name in Hub.objects.exclude(name__in=names).values_list("name", flat=True):
            summary.notes.append(f"Hub {name!r} is not in the file: left as it is")

        if dry_run:
            transaction.set_rollback(True)
        else:
            for outpost in changed:
                flavors_changed(outpost=outpost)
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
