"""apply_config's writer of an Outpost's SSH settings (its ``ssh`` entry).

The entry names OutpostSSH's fields, except the private key, which a file must not hold in
clear: ``key_path`` (a key file on the agent's machine) or ``key_env`` (an environment
variable holding the key's text, stored encrypted). Fields left out take the model's defaults;
an Outpost without an ``ssh`` entry is reached directly (its settings row is removed). A change
of a connection setting re-creates the Outpost's tunnels, as a change in the admin does.
"""

from __future__ import annotations

import os
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from flavors.provisioning import ConfigError, ConfigSummary, check_keys, config_error
from outposts.models import Outpost
from tunnels.models import OutpostSSH
from tunnels.services import outpost_ssh_delete, outpost_ssh_save

SSH_FIELDS = {
    "reach",
    "jump_host",
    "jump_port",
    "user",
    "key_path",
    "key_env",
    "known_hosts",
    "accept_new_host_keys",
    "agent",
    "bind_host",
    "advertised_host",
    "hub_system",
}
_SET_AS_GIVEN = SSH_FIELDS - {"key_env"}


def outpost_ssh_apply(*, outpost: Outpost, entry: Any, label: str, summary: ConfigSummary) -> None:
    """Make ``outpost``'s SSH settings what ``entry`` (None: none) says."""
    where = f"{label} ssh"
    existing = OutpostSSH.objects.filter(outpost=outpost).first()
    if entry is None:
        if existing is not None:
            outpost_ssh_delete(ssh=existing)
            summary.deleted.append(where)
        return
    check_keys(where, entry, SSH_FIELDS, set())
    defaults = OutpostSSH()
    ssh = existing or OutpostSSH(outpost=outpost)
    before = {name: getattr(ssh, name) for name in (*_SET_AS_GIVEN, "key")}
    for name in _SET_AS_GIVEN:
        setattr(ssh, name, entry.get(name, getattr(defaults, name)))
    ssh.key = _key(where, entry)
    if existing is not None and before == {name: getattr(ssh, name) for name in before}:
        summary.unchanged.append(where)
        return
    try:
        with transaction.atomic():
            outpost_ssh_save(ssh=ssh)
    except ValidationError as error:
        raise config_error(where, error) from None
    (summary.updated if existing is not None else summary.created).append(where)


def _key(where: str, entry: dict[str, Any]) -> str | None:
    if "key_env" not in entry:
        return None
    key = os.environ.get(str(entry["key_env"]))
    if not key:
        raise ConfigError(
            f"{where}: field 'key_env': environment variable {entry['key_env']} is not set"
        )
    return key
