"""Writes on Hubs and their API keys: the Hub admin and apply_config both call these."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from outposts.models import Hub, HubAPIKey, Outpost
from portal.crypto import credential_digest, new_credential

API_KEY_USE_PRECISION = timedelta(minutes=1)

# What hub_create and hub_update set as given; credentials are write-only and have their own
# parameters. Values are passed on unchanged, for Hub.full_clean() to judge.
HUB_SETTINGS = ("name", "is_active", "callback_url_prefixes", "may_restart_tunnels")


def _check_settings(settings: dict[str, object]) -> None:
    unknown = set(settings) - set(HUB_SETTINGS)
    if unknown:
        raise TypeError(f"a Hub service cannot set {', '.join(sorted(unknown))}")


def hub_create(
    *,
    name: str,
    secret: str,
    outposts: Iterable[Outpost] = (),
    flavors_update_token: str | None = None,
    recreate_forward_token: str | None = None,
    **settings: object,
) -> Hub:
    """A new Hub with its secret (only a digest is stored), flavor-update and
    recreate-forward tokens (encrypted) and the Outposts it may use; HUB_SETTINGS not given
    take the model's defaults.

    Raises ValidationError (Hub.full_clean) naming the field at fault, ValueError for an empty
    secret; nothing is written then.
    """
    _check_settings(settings)
    hub = Hub(
        name=name,
        flavors_update_token=flavors_update_token or None,
        recreate_forward_token=recreate_forward_token or None,
        **settings,
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
    recreate_forward_token: str | None = None,
    **changes: object,
) -> bool:
    """Change what is given of a Hub's HUB_SETTINGS, secret, token and Outposts; returns
    whether anything changed (nothing is saved otherwise).

    A secret or a token given replaces the stored one; None (or an empty token) keeps it.
    Raises ValidationError (Hub.full_clean) naming the field at fault, ValueError for an
    empty secret; nothing is written then.
    """
    _check_settings(changes)
    compared = (*HUB_SETTINGS, "secret_digest", "flavors_update_token", "recreate_forward_token")
    before = {name: getattr(hub, name) for name in compared}
    for name, value in changes.items():
        setattr(hub, name, value)
    if secret is not None:
        # Keyed digests are deterministic: the same secret again changes nothing.
        hub.set_secret(secret)
    if flavors_update_token:
        # Compared decrypted: the stored ciphertext differs on every save.
        hub.flavors_update_token = flavors_update_token
    if recreate_forward_token:
        hub.recreate_forward_token = recreate_forward_token
    changed = before != {name: getattr(hub, name) for name in compared}
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
