import base64

import pytest
from rest_framework.test import APIClient

from tests.factories import HUB_SECRET, HubFactory, OutpostFactory


@pytest.fixture
def outpost(db):
    return OutpostFactory(slug="local", name="Local processes")


@pytest.fixture
def hub(outpost):
    return HubFactory(name="hub1", outposts=[outpost])


def basic_auth(name: str, secret: str = HUB_SECRET) -> str:
    return "Basic " + base64.b64encode(f"{name}:{secret}".encode()).decode()


@pytest.fixture
def hub_client(hub):
    """An API client that authenticates as `hub` with HTTP Basic, as stock Hubs do."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=basic_auth(hub.name))
    return client
