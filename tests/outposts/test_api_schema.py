"""The OpenAPI schema documents the API, including the hubclient's events endpoint."""

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def test_schema_lists_every_endpoint_once():
    # when anyone fetches the schema
    response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    # then it documents each canonical path of an Outpost's API
    assert response.status_code == 200
    schema = response.json()
    base = "/outposts/{outpost_slug}/"
    assert set(schema["paths"]) == {
        base + path
        for path in (
            "ping",
            "services",
            "services/{name}/{start_id}",
            "services/{name}/{start_id}/events",
            "flavors",
            "userflavors",
            "tunnels/restart",
        )
    }
    events = schema["paths"][base + "services/{name}/{start_id}/events"]["get"]
    assert events["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/EventsAnswer"
    }
    start = schema["paths"][base + "services"]["post"]
    assert set(start["responses"]) >= {"200", "202", "400", "401", "404", "419"}
    assert {"Start", "Error", "Server", "PollAnswer"} <= set(schema["components"]["schemas"])
