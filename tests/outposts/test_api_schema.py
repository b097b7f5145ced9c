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


def test_schema_states_the_start_rules():
    # when a client reads what a start needs
    schema = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    schema = schema.json()
    start = schema["paths"]["/outposts/{outpost_slug}/services"]["post"]
    body = schema["components"]["schemas"]["Start"]["properties"]
    # then it states the env keys every start must carry
    assert body["env"]["required"] == ["JUPYTERHUB_USER", "JUPYTERHUB_USER_ID"]
    assert set(body["env"]["properties"]) == {"JUPYTERHUB_USER", "JUPYTERHUB_USER_ID"}
    # and the values execution-type takes
    (header,) = [param for param in start["parameters"] if param["name"] == "execution-type"]
    assert (header["in"], header["schema"]["enum"]) == ("header", ["async", "sync"])
    # and the character rule of names and start_ids, in the body and in a server's paths
    assert body["name"]["oneOf"][0]["pattern"] == r"^(?!\.\.?$)[A-Za-z0-9._~-]*$"
    start_id = body["user_options"]["properties"]["start_id"]["oneOf"][0]
    assert start_id["pattern"] == r"^(?!\.\.?$)[A-Za-z0-9._~-]+$"
    poll = schema["paths"]["/outposts/{outpost_slug}/services/{name}/{start_id}"]["get"]
    patterns = {param["name"]: param["schema"].get("pattern") for param in poll["parameters"]}
    assert patterns["name"] == body["name"]["oneOf"][0]["pattern"]
    assert patterns["start_id"] == start_id["pattern"]
    # and that a start may answer 413 (too large) and 415 (not JSON)
    assert {"413", "415"} <= set(start["responses"])
