"""Encryption at rest with a key ring, and keyed digests of Hub credentials.

The key ring is settings.ENCRYPTION_KEYS, newest first: values are encrypted with the first
key and decrypt with any, so a key is rotated by putting a new one in front, running
``manage.py rotate_encryption_keys`` and then dropping the old one.

Hub credentials are digested with settings.CREDENTIAL_KEY (PORTAL_CREDENTIAL_KEY), never with
SECRET_KEY: the session key gets rotated routinely, and every stored digest would then stop
matching. Old credential keys stay in CREDENTIAL_KEY_FALLBACKS until the Hubs' secrets and
API keys have been re-issued.
"""

import hashlib
import hmac
import json
import secrets
from functools import cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models


@cache
def _key_ring(keys: tuple[str, ...]) -> MultiFernet:
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except ValueError as error:
        raise ImproperlyConfigured(
            "PORTAL_ENCRYPTION_KEYS must be url-safe base64 Fernet keys "
            "(PORTAL_DEBUG=1 python manage.py generate_secrets prints one)"
        ) from error


def key_ring() -> MultiFernet:
    return _key_ring(tuple(settings.ENCRYPTION_KEYS))


def encrypt_text(plain: str) -> str:
    return key_ring().encrypt(plain.encode()).decode()


def decrypt_text(token: str) -> str:
    return key_ring().decrypt(token.encode()).decode()


def reencrypt_text(token: str) -> str:
    """The same plaintext under the newest key (MultiFernet.rotate)."""
    return key_ring().rotate(token.encode()).decode()


class EncryptedJSONField(models.TextField):
    """A JSON value stored as a Fernet token: readable only with the key ring."""

    description = "JSON encrypted with the portal's key ring"

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> Any:
        if value is None or value == "":
            return None
        try:
            return json.loads(decrypt_text(value))
        except InvalidToken as error:
            raise ImproperlyConfigured(
                f"Cannot decrypt {self.model.__name__}.{self.name}: "
                "its key is not in PORTAL_ENCRYPTION_KEYS"
            ) from error

    def to_python(self, value: Any) -> Any:
        return value

    def get_prep_value(self, value: Any) -> str | None:
        if value is None:
            return None
        return encrypt_text(json.dumps(value, sort_keys=True))

    def value_to_string(self, obj: models.Model) -> str:
        return json.dumps(self.value_from_object(obj))


def new_credential(prefix: str = "") -> str:
    """A fresh high-entropy machine secret (Hub secrets, API keys, call-back tokens)."""
    return prefix + secrets.token_urlsafe(32)


def _digest_with(key: str, credential: str) -> str:
    return hmac.new(
        key.encode(), b"outpost-portal.credential:" + credential.encode(), hashlib.sha256
    ).hexdigest()


def credential_digest(credential: str) -> str:
    """Keyed SHA-256 digest of a machine credential, as stored.

    Deliberately fast (not PBKDF2): every Hub API call authenticates, and the credentials are
    generated machine secrets, not passwords (api-contract.md §2).
    """
    return _digest_with(settings.CREDENTIAL_KEY, credential)


def credential_digests(credential: str) -> list[str]:
    """The digests a stored value may have been made with: current key first, then fallbacks."""
    keys = [settings.CREDENTIAL_KEY, *settings.CREDENTIAL_KEY_FALLBACKS]
    return [_digest_with(key, credential) for key in keys]


def credential_matches(credential: str, stored_digest: str) -> bool:
    return any(
        hmac.compare_digest(candidate, stored_digest)
        for candidate in credential_digests(credential)
    )
