"""What a start's internal-SSL material is, and the files it becomes for one server."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from portal.crypto import decrypt_text

# The PEM files a start may carry, and the only file names ever written for them.
CERT_FILES = {"keyfile": "server.key", "certfile": "server.crt", "cafile": "ca.crt"}
TRUST_BUNDLE_FILES = {
    "hub-ca": "hub-ca.crt",
    "proxy-api-ca": "proxy-api-ca.crt",
    "proxy-client-ca": "proxy-client-ca.crt",
    "notebooks-ca": "notebooks-ca.crt",
    "services-ca": "services-ca.crt",
}


SSL_ENV = ("JUPYTERHUB_SSL_KEYFILE", "JUPYTERHUB_SSL_CERTFILE", "JUPYTERHUB_SSL_CLIENT_CA")


@dataclass(frozen=True)
class TLSMaterial:
    """Internal-SSL PEM contents of one start; never stored in the database."""

    certs: dict[str, str] = field(default_factory=dict, repr=False)
    internal_trust_bundles: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_token(cls, token: str | None) -> TLSMaterial | None:
        """Decrypt what server_start carried to the task; None when SSL is off."""
        if not token:
            return None
        data = json.loads(decrypt_text(token))
        certs = {k: v for k, v in (data.get("certs") or {}).items() if k in CERT_FILES and v}
        if not certs:
            return None
        bundles = {
            k: v
            for k, v in (data.get("internal_trust_bundles") or {}).items()
            if k in TRUST_BUNDLE_FILES and v
        }
        return cls(certs=certs, internal_trust_bundles=bundles)


def server_certs_dir(server_id: int) -> Path:
    """The folder of a server's cert files: named from its id, never from a user-given name."""
    return Path(settings.SERVER_CERTS_DIR) / f"server-{int(server_id)}"


def _write_private(path: Path, content: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)


def write_tls_files(server_id: int, tls: TLSMaterial) -> tuple[dict[str, str], dict[str, str]]:
    """Write the PEM files under the server's folder; returns cert paths and bundle paths."""
    folder = server_certs_dir(server_id)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_paths: dict[str, str] = {}
    for key, file_name in CERT_FILES.items():
        if key in tls.certs:
            _write_private(folder / file_name, tls.certs[key])
            cert_paths[key] = str(folder / file_name)
    bundle_paths: dict[str, str] = {}
    for key, content in tls.internal_trust_bundles.items():
        _write_private(folder / TRUST_BUNDLE_FILES[key], content)
        bundle_paths[key] = str(folder / TRUST_BUNDLE_FILES[key])
    return cert_paths, bundle_paths


def remove_tls_files(server_id: int) -> None:
    shutil.rmtree(server_certs_dir(server_id), ignore_errors=True)
