"""The Hub services the admin and apply_config write through: hub_create and hub_update."""

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from outposts.hubs import hub_create, hub_update
from outposts.models import Hub
from portal.crypto import credential_digest
from tests.factories import HUB_SECRET, HubFactory

pytestmark = pytest.mark.django_db

PREFIXES = ["https://hub.example.org/hub/api/"]


def writes(queries: CaptureQueriesContext) -> list[str]:
    return [
        query["sql"]
        for query in queries.captured_queries
        if query["sql"].startswith(("INSERT", "UPDATE", "DELETE"))
    ]


def test_create_stores_only_a_digest_of_the_secret_and_sets_outposts(two_outposts):
    # when a Hub is created with a secret, a token and two Outposts
    hub = hub_create(
        name="hub1",
        secret="the-secret",
        outposts=two_outposts,
        callback_url_prefixes=PREFIXES,
        flavors_update_token="the-token",
    )
    # then the stored row has the secret's digest only, the token and the Outposts
    stored = Hub.objects.get(pk=hub.pk)
    assert stored.secret_digest == credential_digest("the-secret")
    assert "the-secret" not in stored.secret_digest
    assert stored.check_secret("the-secret") and not stored.check_secret("another")
    assert stored.flavors_update_token == "the-token"
    assert stored.callback_url_prefixes == PREFIXES
    assert stored.is_active
    assert set(stored.outposts.all()) == set(two_outposts)


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"callback_url_prefixes": ["file:///etc/"]}, "callback_url_prefixes"),
        ({"callback_url_prefixes": None}, "callback_url_prefixes"),
        ({"name": "not a slug!"}, "name"),
    ],
)
def test_create_validates_and_writes_nothing(two_outposts, settings, field):
    # when a Hub is created with a value Hub.full_clean() refuses
    with pytest.raises(ValidationError) as error:
        hub_create(**{"name": "hub1", "secret": "s", "outposts": two_outposts, **settings})
    # then the error names the field, and no Hub (nor an Outpost link) exists
    assert list(error.value.message_dict) == [field]
    assert not Hub.objects.exists()
    assert not Hub.outposts.through.objects.exists()


def test_create_refuses_an_empty_secret():
    # when a Hub is created with an empty secret, then it is refused: "" would let "" in
    with pytest.raises(ValueError, match="secret cannot be empty"):
        hub_create(name="hub1", secret="")
    assert not Hub.objects.exists()


def test_update_with_the_same_values_and_secret_reports_unchanged(two_outposts):
    # given a Hub
    mine, _ = two_outposts
    hub = HubFactory(name="hub1", outposts=[mine], callback_url_prefixes=PREFIXES)
    hub_update(hub=hub, flavors_update_token="the-token")
    hub = Hub.objects.get(pk=hub.pk)
    # when it is updated with the values it has, its secret and token again
    with CaptureQueriesContext(connection) as queries:
        changed = hub_update(
            hub=hub,
            name="hub1",
            is_active=True,
            callback_url_prefixes=list(PREFIXES),
            secret=HUB_SECRET,
            flavors_update_token="the-token",
            outposts=[mine],
        )
    # then it says nothing changed and wrote nothing
    assert changed is False
    assert writes(queries) == []


@pytest.mark.parametrize(
    "change",
    [
        {"name": "renamed"},
        {"is_active": False},
        {"callback_url_prefixes": ["https://other.example.org/"]},
        {"secret": "a-new-secret"},
        {"flavors_update_token": "a-new-token"},
        {"outposts": []},
    ],
    ids=lambda change: next(iter(change)),
)
def test_update_reports_and_stores_each_change(two_outposts, change):
    # given a Hub using "mine"
    mine, _ = two_outposts
    hub = HubFactory(name="hub1", outposts=[mine])
    # when one thing about it changes
    changed = hub_update(hub=hub, **change)
    # then that is reported and stored
    assert changed is True
    stored = Hub.objects.get(pk=hub.pk)
    [(name, value)] = change.items()
    if name == "secret":
        assert stored.check_secret(value) and not stored.check_secret(HUB_SECRET)
    elif name == "outposts":
        assert list(stored.outposts.all()) == value
    else:
        assert getattr(stored, name) == value


def test_update_keeps_credentials_not_given(two_outposts):
    # given a Hub with a secret and a token
    hub = HubFactory(name="hub1")
    hub_update(hub=hub, flavors_update_token="the-token")
    # when only its active flag changes (the admin posts empty credential fields as None)
    hub_update(hub=hub, is_active=False, secret=None, flavors_update_token=None)
    # then the secret and the token are the ones it had
    stored = Hub.objects.get(pk=hub.pk)
    assert stored.check_secret(HUB_SECRET)
    assert stored.flavors_update_token == "the-token"
    assert not stored.is_active


def test_update_validates_and_writes_nothing(two_outposts):
    # given a Hub using "mine"
    mine, theirs = two_outposts
    hub = HubFactory(name="hub1", outposts=[mine], callback_url_prefixes=PREFIXES)
    # when it is updated with a bad prefix, a new secret and other Outposts
    with pytest.raises(ValidationError) as error:
        hub_update(
            hub=hub,
            callback_url_prefixes=["file:///etc/"],
            secret="a-new-secret",
            outposts=[theirs],
        )
    # then the error names the field, and the stored Hub is as it was
    assert error.value.message_dict == {
        "callback_url_prefixes": ["Must be a JSON list of http(s) URL prefixes."]
    }
    stored = Hub.objects.get(pk=hub.pk)
    assert stored.callback_url_prefixes == PREFIXES
    assert stored.check_secret(HUB_SECRET)
    assert list(stored.outposts.all()) == [mine]


def test_services_set_no_field_but_the_hub_settings():
    # given a Hub
    hub = HubFactory(name="hub1")
    # when a caller tries to set the digest (or anything else) directly, then it is refused
    with pytest.raises(TypeError, match="cannot set secret_digest"):
        hub_update(hub=hub, secret_digest="0" * 64)
    with pytest.raises(TypeError, match="cannot set created_at"):
        hub_create(name="hub2", secret="s", created_at=None)
    assert Hub.objects.get(pk=hub.pk).check_secret(HUB_SECRET)
    assert not Hub.objects.filter(name="hub2").exists()
