"""The ``outposts`` option: parsed and checked once, credentials read when a request is sent."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .wire import make_authorization, normalize_base_url

OUTPOST_KEYS = frozenset(
    {
        "url",
        "display_name",
        "hub_name",
        "secret_env",
        "secret_file",
        "api_key_env",
        "api_key_file",
        "secret",
        "api_key",
        "validate_cert",
        "ca_file",
    }
)
_CREDENTIAL_KEYS = ("secret_env", "secret_file", "api_key_env", "api_key_file", "secret", "api_key")


@dataclass(frozen=True)
class OutpostConfig:
    """One Outpost the Hub may start servers on, as configured in ``outposts``."""

    name: str
    url: str
    display_name: str
    hub_name: str = ""
    secret_env: str = ""
    secret_file: str = ""
    api_key_env: str = ""
    api_key_file: str = ""
    # Inline credentials end up in config files and their backups: allowed, not advised.
    secret: str = ""
    api_key: str = ""
    validate_cert: bool | None = None
    ca_file: str = ""

    def authorization(self, environ: Mapping[str, str] | None = None) -> str:
        """The Authorization header, read afresh so rotated secrets apply without a restart."""
        environ = os.environ if environ is None else environ
        api_key = self.api_key or _read(self, "api_key", environ)
        secret = "" if api_key else (self.secret or _read(self, "secret", environ))
        return make_authorization(hub_name=self.hub_name, secret=secret, api_key=api_key)


def _read(config: OutpostConfig, kind: str, environ: Mapping[str, str]) -> str:
    variable = getattr(config, f"{kind}_env")
    path = getattr(config, f"{kind}_file")
    if variable:
        value = environ.get(variable, "").strip()
        if not value:
            raise ValueError(
                f"Outpost {config.name!r}: environment variable {variable} ({kind}) is not set."
            )
        return value
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as error:
            raise ValueError(
                f"Outpost {config.name!r}: cannot read {kind} file {path}: {error.strerror}."
            ) from None
    return ""


def parse_outposts(raw: Mapping[str, Any], *, default_hub_name: str = "") -> list[OutpostConfig]:
    """Check the ``outposts`` option; raises ValueError naming the Outpost and the problem."""
    configs = []
    for name, entry in raw.items():
        if not isinstance(entry, Mapping):
            raise ValueError(f"Outpost {name!r}: must be a dict with at least 'url'.")
        unknown = set(entry) - OUTPOST_KEYS
        if unknown:
            raise ValueError(
                f"Outpost {name!r}: unknown keys {sorted(unknown)}; known: {sorted(OUTPOST_KEYS)}."
            )
        if "url" not in entry:
            raise ValueError(f"Outpost {name!r}: 'url' is required.")
        given = [key for key in _CREDENTIAL_KEYS if entry.get(key)]
        secret_keys = [key for key in given if key.startswith("secret")]
        key_keys = [key for key in given if key.startswith("api_key")]
        if not given:
            raise ValueError(
                f"Outpost {name!r}: give a credential: secret_env, secret_file, api_key_env "
                "or api_key_file."
            )
        if len(secret_keys) > 1 or len(key_keys) > 1:
            raise ValueError(f"Outpost {name!r}: give one source per credential, not {given}.")
        hub_name = str(entry.get("hub_name") or default_hub_name)
        if secret_keys and not key_keys and not hub_name:
            raise ValueError(
                f"Outpost {name!r}: HTTP Basic needs the Hub's name: set 'hub_name' or "
                "OutpostPortalSpawner.hub_name."
            )
        validate_cert = entry.get("validate_cert")
        configs.append(
            OutpostConfig(
                name=str(name),
                url=normalize_base_url(str(entry["url"])),
                display_name=str(entry.get("display_name") or name),
                hub_name=hub_name,
                secret_env=str(entry.get("secret_env") or ""),
                secret_file=str(entry.get("secret_file") or ""),
                api_key_env=str(entry.get("api_key_env") or ""),
                api_key_file=str(entry.get("api_key_file") or ""),
                secret=str(entry.get("secret") or ""),
                api_key=str(entry.get("api_key") or ""),
                validate_cert=None if validate_cert is None else bool(validate_cert),
                ca_file=str(entry.get("ca_file") or ""),
            )
        )
    return configs
