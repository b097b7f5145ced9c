"""Fixtures of the outposts tests: contract examples, shape checks, requests as a Hub sends
them, and the admin's users."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from guardian.shortcuts import assign_perm
from rest_framework.test import APIClient

from tests.factories import OutpostFactory, UserFactory

CONTRACT_DIR = Path(__file__).resolve().parent.parent / "contract"
BASE = "/outposts/local/"


def contract(name: str) -> dict[str, Any]:
    return json.loads((CONTRACT_DIR / name).read_text())


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def assert_same_shape(example: Any, actual: Any, where: str = "$") -> None:
    """``actual`` has ``example``'s keys and JSON types, recursively (values may differ)."""
    assert json_type(actual) == json_type(example), f"{where}: {actual!r} vs {example!r}"
    if isinstance(example, dict):
        assert set(actual) == set(example), f"{where}: keys {sorted(actual)} vs {sorted(example)}"
        for key in example:
            assert_same_shape(example[key], actual[key], f"{where}.{key}")
    elif isinstance(example, list) and example:
        assert actual, f"{where}: expected at least one item"
        for index, item in enumerate(actual):
            assert_same_shape(example[0], item, f"{where}[{index}]")


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


ASYNC = {"execution-type": "async"}


@pytest.fixture
def short_sync_wait(settings):
    """Synchronous starts and stops give up waiting quickly (no Celery worker runs here)."""
    settings.SYNC_WAIT_TIMEOUT = 0.3
    return settings


# --- The admin's permission ladder ---------------------------------------------------------


@pytest.fixture
def two_outposts():
    return OutpostFactory(slug="mine", name="My cluster"), OutpostFactory(
        slug="theirs", name="Their cluster"
    )


@pytest.fixture
def site_admin(client, two_outposts):
    """A staff user holding the object permission on the first Outpost only, logged in."""
    mine, _ = two_outposts
    user = UserFactory(username="siteadmin", is_staff=True)
    assign_perm("outposts.change_outpost", user, mine)
    client.force_login(user)
    return user


@pytest.fixture
def superuser(client):
    user = UserFactory(username="root", is_staff=True, is_superuser=True)
    client.force_login(user)
    return user
