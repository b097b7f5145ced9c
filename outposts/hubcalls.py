"""The HTTP calls the portal makes to a Hub (api-contract.md §6).

Bodies are built by pure ``make_*`` functions; ``hub_post`` sends them with a timeout and TLS
verified by default. None of these calls may fail a start or a stop: the tasks that make them
run on their own, retry only ``HubUnreachable`` and log everything else.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.utils.html import escape

from monitoring.services import hub_callback_failure_count

log = logging.getLogger(__name__)


class HubCallError(Exception):
    """A call to a Hub did not succeed."""


class HubUnreachable(HubCallError):
    """The Hub could not be reached or answered 5xx: worth retrying later."""


class HubRefused(HubCallError):
    """The Hub answered 4xx: retrying the same call will not help."""


def make_event_body(*, progress: int, message: str, failed: bool) -> dict[str, Any]:
    """A progress event; html_message is the escaped text, never raw spawner output."""
    return {
        "progress": int(progress),
        "message": message,
        "html_message": escape(message),
        "failed": bool(failed),
    }


def address_host_port(address: str) -> str:
    """``host:port`` of an address that may be a URL (``http://host:port/path``)."""
    if "://" not in address:
        return address.split("/", 1)[0]
    return urlsplit(address).netloc


def make_setup_tunnel_body(*, address: str) -> dict[str, str]:
    """The set-up-tunnel body: the stock Hub splits ``service`` on ':' into host and port."""
    return {"service": address_host_port(address)}


def make_flavor_update_body(*, flavors: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The flavor update body is exactly what GET flavors/ answers for that Hub."""
    return {name: dict(flavor) for name, flavor in flavors.items()}


def make_headers(*, token: str) -> dict[str, str]:
    return {"Authorization": f"token {token}", "Content-Type": "application/json"}


def hub_post(*, url: str, token: str, body: Mapping[str, Any]) -> None:
    """POST ``body`` as JSON to a Hub URL.

    Raises HubUnreachable on connection errors, timeouts and 5xx; HubRefused on other
    non-2xx answers, redirects included (they are never followed). Callers check the URL
    first (callbacks.hub_callback_url).
    """
    hub_request(method="POST", url=url, token=token, body=body)


def hub_request(*, method: str, url: str, token: str, body: Mapping[str, Any] | None) -> None:
    """``hub_post`` for any method; a GET sends no body. Every failed call is counted
    (the metric portal_hub_callback_failures_total)."""
    try:
        _hub_request(method=method, url=url, token=token, body=body)
    except HubUnreachable:
        hub_callback_failure_count(reason="unreachable")
        raise
    except HubRefused:
        hub_callback_failure_count(reason="refused")
        raise


def _hub_request(*, method: str, url: str, token: str, body: Mapping[str, Any] | None) -> None:
    try:
        response = requests.request(
            method,
            url,
            json=body,
            headers=make_headers(token=token),
            timeout=settings.HUB_CALL_TIMEOUT,
            verify=settings.HUB_CALL_VERIFY,
            # The URL was checked against the Hub's prefixes; a redirect could lead anywhere.
            allow_redirects=False,
        )
    except requests.RequestException as error:
        raise HubUnreachable(f"{url}: {error.__class__.__name__}: {error}") from error
    if response.status_code >= 500:
        raise HubUnreachable(f"{url} answered {response.status_code}")
    if response.status_code >= 300:
        raise HubRefused(f"{url} answered {response.status_code}: {response.text[:200]}")


def send_event(*, url: str, token: str, progress: int, message: str, failed: bool) -> None:
    hub_post(
        url=url,
        token=token,
        body=make_event_body(progress=progress, message=message, failed=failed),
    )


def send_setup_tunnel(*, url: str, token: str, address: str) -> None:
    hub_post(url=url, token=token, body=make_setup_tunnel_body(address=address))


def send_flavor_update(*, url: str, token: str, flavors: Mapping[str, Mapping[str, Any]]) -> None:
    hub_post(url=url, token=token, body=make_flavor_update_body(flavors=flavors))


def send_recreate_forward(*, url: str, token: str) -> None:
    """``GET <hub api>/recreateforward/<system>``: the Hub answers 202 and re-creates them."""
    hub_request(method="GET", url=url, token=token, body=None)
