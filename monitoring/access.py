"""Who may read /metrics: a client with the token, or one from an allowed network.

The counts tell how busy each Outpost is and which Hubs call it; they are not public. With
neither PORTAL_METRICS_TOKEN nor PORTAL_METRICS_ALLOWED_NETWORKS set, /metrics is off.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from enum import StrEnum

from django.conf import settings
from django.http import HttpRequest


class MetricsAccess(StrEnum):
    ALLOWED = "allowed"
    OFF = "off"  # nothing configured: the endpoint does not exist
    UNAUTHENTICATED = "unauthenticated"  # a token is configured: no or a wrong one sent
    FORBIDDEN = "forbidden"  # only networks are configured: the client is outside them


def metrics_access(request: HttpRequest) -> MetricsAccess:
    token = settings.METRICS_TOKEN
    networks = settings.METRICS_ALLOWED_NETWORKS
    if not token and not networks:
        return MetricsAccess.OFF
    if token and _bearer_matches(request, token):
        return MetricsAccess.ALLOWED
    if networks and _client_in(request, networks):
        return MetricsAccess.ALLOWED
    return MetricsAccess.UNAUTHENTICATED if token else MetricsAccess.FORBIDDEN


def _bearer_matches(request: HttpRequest, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        return False
    # Digests of equal length, compared in constant time: the answer time tells nothing of
    # how much of the token was right, nor of its length.
    return hmac.compare_digest(
        hashlib.sha256(given.strip().encode()).digest(), hashlib.sha256(token.encode()).digest()
    )


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _client_in(request: HttpRequest, networks: list[Network]) -> bool:
    # The peer's address only: X-Forwarded-For is whatever the client wrote (docs say to use
    # the token behind a proxy).
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address.version == network.version and address in network for network in networks)
