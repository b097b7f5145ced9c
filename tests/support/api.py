"""The portal's API as a Hub uses it, through Django's test client: a Hub and its
credentials, requests as a Hub sends them, minimal start bodies.

For the shared examples and the shape check see contract.py.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.factories import HUB_SECRET, HubFactory, OutpostFactory

#: The API of the ``outpost`` fixture's Outpost.
BASE = "/outposts/local/"
#: The header of an asynchronous start or stop.
ASYNC = {"execution-type": "async"}


def basic_auth(name: str, secret: str = HUB_SECRET) -> str:
    return "Basic " + base64.b64encode(f"{name}:{secret}".encode()).decode()


def send(
    client: APIClient,
    method: str,
    path: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    raw: str | None = None,
):
    """A request as a Hub sends it: a JSON body (or ``raw`` text) and its own headers."""
    extra = {
        "HTTP_" + name.upper().replace("-", "_"): value
        for name, value in (headers or {}).items()
        if name.lower() not in ("content-type", "accept")
    }
    data = raw if raw is not None else ("" if body is None else json.dumps(body))
    return client.generic(method, path, data, content_type="application/json", **extra)


def send_exchange(client: APIClient, exchange: dict[str, Any], base: str = BASE):
    """Send the ``request`` of a shared example (``contract(...)``) as a Hub would."""
    request = exchange["request"]
    return send(
        client,
        request["method"],
        base + request["path"],
        request["body"],
        headers=request["headers"],
    )


def start_body(
    name: str = "lab", start_id: str = "s1", user_id: str = "1", **fields: Any
) -> dict[str, Any]:
    """A minimal start body of user ``user_id``; ``fields`` are added at the top level."""
    return {
        "name": name,
        "env": {"JUPYTERHUB_USER": f"user{user_id}", "JUPYTERHUB_USER_ID": user_id},
        "user_options": {"start_id": start_id},
        **fields,
    }


# --- Fixtures (registered by tests/conftest.py and tests/outposts/conftest.py) -------------


@pytest.fixture
def outpost(db):
    return OutpostFactory(slug="local", name="Local processes")


@pytest.fixture
def hub(outpost):
    return HubFactory(name="hub1", outposts=[outpost])


@pytest.fixture
def hub_client(hub):
    """An API client that authenticates as `hub` with HTTP Basic, as stock Hubs do."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=basic_auth(hub.name))
    return client


@pytest.fixture
def short_sync_wait(settings):
    """Synchronous starts and stops give up waiting quickly (no Celery worker runs here)."""
    settings.SYNC_WAIT_TIMEOUT = 0.3
    return settings
