"""Writes on Hubs and their API keys: the admin's Hub form and apply_config both call these."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from outposts.models import Hub, HubAPIKey, Outpost
from portal.crypto import credential_digest, new_credential

API_KEY_USE_PRECISION = timedelta(minutes=1)

# What hub_update may set; credentials are write-only and have their own parameters.
HUB_SETTINGS = ("name", "is_active", "callback_url_prefixes")


def hub_create(
    *,
    name: str,
    secret: str,
    outposts: Iterable[Outpost] = (),
    is_active: bool = True,
    callback_url_prefixes: list[str] | None = None,
    flavors_update_token: str | None = None,
) -> Hub:
    """A new Hub with its secret (only a digest is stored) and the Outposts it may use.

    Raises ValidationError (Hub.full_clean) naming the field at fault; nothing is written then.
    """
    hub = Hub(
        name=name,
        is_active=is_active,
        callback_url_prefixes=list(callback_url_prefixes or []),
        flavors_update_token=flavors_update_token or None,
    )
    hub.set_secret(secret)
    hub.full_clean()
    with transaction.atomic():
        hub.save()
        hub.outposts.set(list(outposts))
    return hub


def hub_update(
    *,
    hub: Hub,
    secret: str | None = None,
    outposts: Iterable[Outpost] | None = None,
    flavors_update_token: str | None = None,
    **changes: object,
) -> bool:
    """Change what is given of a Hub's HUB_SETTINGS, secret, token and Outposts; returns
    whether anything changed (nothing is saved otherwise).

    A secret or token given replaces the stored one; None keeps it. Raises ValidationError
    (Hub.full_clean) naming the field at fault; nothing is written then.
    """
    unknown = set(changes) - set(HUB_SETTINGS)
    if unknown:
        raise TypeError(f"hub_update cannot set {', '.join(sorted(unknown))}")
    before = {name: getattr(hub, name) for name in (*HUB_SETTINGS, "secret_digest")}
    for name, value in changes.items():
        setattr(hub, name, value)
    if secret is not None:
        # Keyed digests are deterministic: the same secret again changes nothing.
        hub.set_secret(secret)
    changed = before != {name: getattr(hub, name) for name in before}
    if flavors_update_token:
        hub.flavors_update_token = flavors_update_token
        changed = True
    hub.full_clean()
    with transaction.atomic():
        if outposts is not None:
            wanted = {outpost.pk for outpost in outposts}
            if wanted != set(hub.outposts.values_list("pk", flat=True)):
                hub.outposts.set(list(wanted))
                changed = True
        if changed:
            hub.save()
    return changed


def hub_api_key_create(
    *, hub: Hub, name: str = "", expires_at: datetime | None = None
) -> tuple[HubAPIKey, str]:
    """A new API key for ``hub``; the key itself is returned once and never stored."""
    key = new_credential(prefix="op_")
    api_key = HubAPIKey.objects.create(
        hub=hub, name=name, expires_at=expires_at, key_digest=credential_digest(key)
    )
    return api_key, key


def hub_api_key_record_use(*, api_key: HubAPIKey) -> None:
    """Note when a key was last used, at most once a minute: Hubs call every few seconds."""
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at >= API_KEY_USE_PRECISION:
        HubAPIKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
