"""Who may call the API, and which Outposts each Hub sees (api-contract.md §1-2)."""

import logging
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from outposts.hubs import hub_api_key_create
from tests.factories import HubFactory, OutpostFactory
from tests.support.api import basic_auth

pytestmark = pytest.mark.django_db


def client_with(authorization: str | None) -> APIClient:
    client = APIClient()
    if authorization is not None:
        client.credentials(HTTP_AUTHORIZATION=authorization)
    return client


@pytest.mark.parametrize("path", ["/outposts/local/ping", "/outposts/local/ping/", "/ping"])
def test_ping_needs_no_credentials(path):
    # when anyone pings, with or without a trailing slash, at an Outpost or the root
    response = APIClient().get(path)
    # then the portal answers
    assert response.status_code == 200
    assert response.json() == {"ping": "pong!"}


def test_basic_auth_with_the_hub_secret(hub_client, outpost):
    assert hub_client.get("/outposts/local/services").status_code == 200


@pytest.mark.parametrize("scheme", ["token", "Token", "Bearer", "bearer"])
def test_api_key_as_token_or_bearer(hub, outpost, scheme):
    # given an API key of the Hub
    _, key = hub_api_key_create(hub=hub, name="ci")
    # when the Hub sends it
    response = client_with(f"{scheme} {key}").get("/outposts/local/flavors/")
    # then it is in
    assert response.status_code == 200


def test_a_key_in_use_shows_when_it_was_last_used(hub, outpost):
    # given a key never used
    api_key, key = hub_api_key_create(hub=hub, name="ci")
    assert api_key.last_used_at is None
    # when the Hub calls twice
    for _ in range(2):
        client_with(f"token {key}").get("/outposts/local/services")
    # then the key's last use is recorded (once: the second call is within the minute)
    api_key.refresh_from_db()
    assert api_key.last_used_at is not None
    assert timezone.now() - api_key.last_used_at < timedelta(minutes=1)


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        basic_auth("hub1", "wrong-secret"),
        basic_auth("nobody"),
        "Basic !!!not-base64!!!",
        "Basic " + "aHViMQ==",  # "hub1", no colon
        "Basic",
        "token",
        "token not-a-key",
        "Digest username=hub1",
    ],
)
def test_bad_or_missing_credentials_answer_401(hub, outpost, authorization):
    # when a request comes without valid credentials
    response = client_with(authorization).get("/outposts/local/services")
    # then it is refused with a Basic challenge and a detail
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Basic"
    assert isinstance(response.json()["detail"], str)


def test_an_inactive_hub_is_refused(hub, outpost, hub_client):
    hub.is_active = False
    hub.save()
    assert hub_client.get("/outposts/local/services").status_code == 401


def test_expired_and_revoked_keys_answer_401(hub, outpost):
    # given an expired key and a revoked key, and a valid one (rotation: two keys at once)
    expired, expired_key = hub_api_key_create(
        hub=hub, expires_at=timezone.now() - timedelta(seconds=1)
    )
    revoked, revoked_key = hub_api_key_create(hub=hub)
    revoked.revoked = True
    revoked.save()
    _, valid_key = hub_api_key_create(hub=hub, expires_at=timezone.now() + timedelta(days=1))
    # then only the valid key gets in
    for key, status in ((expired_key, 401), (revoked_key, 401), (valid_key, 200)):
        response = client_with(f"token {key}").get("/outposts/local/services")
        assert response.status_code == status, key


def test_failed_authentication_logs_no_secret(hub, outpost, caplog):
    # when a Hub sends a wrong secret and an unknown key
    with caplog.at_level(logging.DEBUG):
        client_with(basic_auth("hub1", "s3cr3t-that-is-wrong")).get("/outposts/local/services")
        client_with("token op_leaked-key-value").get("/outposts/local/services")
    # then neither appears in any log record
    assert "s3cr3t-that-is-wrong" not in caplog.text
    assert "op_leaked-key-value" not in caplog.text


@pytest.mark.parametrize(
    "path",
    ["/outposts/other/services", "/outposts/other/flavors/", "/outposts/missing/services"],
)
def test_an_outpost_not_granted_answers_404(hub_client, outpost, path):
    # given an Outpost the Hub was not granted (and one that does not exist)
    OutpostFactory(slug="other")
    # when the Hub calls it
    response = hub_client.get(path)
    # then it does not exist for this Hub
    assert response.status_code == 404
    assert response.json() == {"detail": "Item not found"}


def test_the_default_outpost_is_also_at_the_root(hub_client, outpost):
    # given no default Outpost, the root has no API
    assert hub_client.get("/flavors/").status_code == 404
    # when the granted Outpost becomes the default
    outpost.is_default = True
    outpost.save()
    # then its API answers at the root too
    for path in ("/services", "/services/", "/flavors", "/flavors/"):
        assert hub_client.get(path).status_code == 200, path


def test_the_default_outpost_of_another_hub_is_not_at_the_root_for_this_hub(hub_client, outpost):
    OutpostFactory(slug="elsewhere", is_default=True)
    assert hub_client.get("/services").status_code == 404


def test_another_hub_cannot_use_this_hubs_outpost_grant(outpost):
    # given a second Hub granted nothing
    other = HubFactory(name="hub2")
    # then its credentials work, but the Outpost is not there for it
    response = client_with(basic_auth(other.name)).get("/outposts/local/services")
    assert response.status_code == 404


def test_rotating_the_session_key_keeps_every_hub_in(hub, outpost, settings):
    # given a Hub with its secret and an API key, stored as digests
    _, key = hub_api_key_create(hub=hub, name="ci")
    # when the operator rotates PORTAL_SECRET_KEY (sessions) with no fallback
    settings.SECRET_KEY = "a-brand-new-session-key"
    settings.SECRET_KEY_FALLBACKS = []
    # then both credentials still get the Hub in: they are keyed with the credential key
    assert client_with(basic_auth(hub.name)).get("/outposts/local/services").status_code == 200
    assert client_with(f"token {key}").get("/outposts/local/services").status_code == 200


def test_credentials_verify_with_a_fallback_credential_key(hub, outpost, settings):
    # given a Hub whose secret and API key were digested with the old credential key
    _, key = hub_api_key_create(hub=hub, name="ci")
    old_key = settings.CREDENTIAL_KEY
    # when a new credential key is put in place with the old one as a fallback
    settings.CREDENTIAL_KEY = "a-new-credential-key"
    settings.CREDENTIAL_KEY_FALLBACKS = [old_key]
    with_fallback = [
        client_with(basic_auth(hub.name)).get("/outposts/local/services").status_code,
        client_with(f"token {key}").get("/outposts/local/services").status_code,
    ]
    # and once the fallback is dropped
    settings.CREDENTIAL_KEY_FALLBACKS = []
    without = [
        client_with(basic_auth(hub.name)).get("/outposts/local/services").status_code,
        client_with(f"token {key}").get("/outposts/local/services").status_code,
    ]
    # then they verify while the old key is a fallback, and no longer after
    assert with_fallback == [200, 200]
    assert without == [401, 401]
