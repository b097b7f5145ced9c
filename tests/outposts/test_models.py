"""Rules that live on the models: they hold in the admin, the API and apply_config alike."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError

from outposts.models import Hub, Server
from tests.factories import HubFactory, OutpostFactory

pytestmark = pytest.mark.django_db


def test_two_outposts_cannot_share_a_queue():
    # given an Outpost on the default queue of another slug
    OutpostFactory(slug="cluster")
    intruder = OutpostFactory.build(slug="mine", queue="outpost.cluster")
    # when it is validated, then the queue is refused
    with pytest.raises(ValidationError) as error:
        intruder.full_clean()
    assert "queue" in error.value.message_dict


def test_callbacks_go_only_under_the_hubs_prefixes():
    hub = Hub(name="h", callback_url_prefixes=["https://hub.example.org/hub/api/"])
    assert hub.allows_callback("https://hub.example.org/hub/api/users/progress/events/olga")
    assert not hub.allows_callback("https://hub.example.org.evil.net/hub/api/x")
    assert not hub.allows_callback("http://169.254.169.254/latest/meta-data/")
    assert not hub.allows_callback("file:///etc/passwd")
    assert not hub.allows_callback("https://hub.example.org/hub/api/../../admin/x")
    assert not Hub(name="none").allows_callback("https://hub.example.org/hub/api/x")


@pytest.mark.parametrize("prefixes", ["https://x/", ["ftp://x/"], ["not a url"], [3]])
def test_callback_prefixes_must_be_http_urls(prefixes):
    hub = HubFactory.build(callback_url_prefixes=prefixes)
    with pytest.raises(ValidationError) as error:
        hub.full_clean()
    assert "callback_url_prefixes" in error.value.message_dict


def test_user_option_names_must_be_names():
    outpost = OutpostFactory.build(slug="x", allowed_user_options=["partition", "rm -rf"])
    with pytest.raises(ValidationError) as error:
        outpost.full_clean()
    assert "allowed_user_options" in error.value.message_dict


@pytest.mark.parametrize(
    ("status", "exit_code", "expected"),
    [
        (Server.Status.REQUESTED, None, None),
        (Server.Status.PENDING, None, None),
        (Server.Status.RUNNING, None, None),
        (Server.Status.STOPPING, None, None),
        (Server.Status.UNKNOWN, None, None),  # unknown is not dead: the Hub keeps waiting
        (Server.Status.STOPPED, None, 0),
        (Server.Status.STOPPED, 137, 137),
        (Server.Status.FAILED, None, 1),
        (Server.Status.FAILED, 2, 2),
    ],
)
def test_poll_status_is_null_while_active_then_the_exit_code(status, exit_code, expected):
    assert Server(status=status, exit_code=exit_code).poll_status == expected


def test_saving_an_outposts_settings_keeps_the_reconcilers_lease():
    # given an Outpost loaded for editing, then a reconciler round takes its lease
    from django.utils import timezone

    from outposts.models import Outpost

    outpost = OutpostFactory(slug="cluster")
    edited = Outpost.objects.get(pk=outpost.pk)
    lease = timezone.now() + timedelta(minutes=5)
    Outpost.objects.filter(pk=outpost.pk).update(reconcile_lease_until=lease)
    # when the edited settings are saved
    edited.name = "Renamed"
    edited.save()
    # then the name changed and the round still holds its lease
    outpost.refresh_from_db()
    assert (outpost.name, outpost.reconcile_lease_until) == ("Renamed", lease)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["quay.io/*"], "Must be a JSON object of override names to lists of patterns"),
        ({"image": "quay.io/*"}, "Must be a JSON object of override names to lists of patterns"),
        ({"image": [""]}, "Must be a JSON object of override names to lists of patterns"),
        ({"image": ["quay.io/*"], "cmd": ["*"]}, "cmd: not in the allowed overrides."),
    ],
)
def test_override_values_are_patterns_for_allow_listed_overrides(values, message):
    outpost = OutpostFactory.build(allowed_overrides=["image"], allowed_override_values=values)
    with pytest.raises(ValidationError) as refused:
        outpost.full_clean()
    assert message in refused.value.message_dict["allowed_override_values"][0]


def test_override_values_for_allow_listed_overrides_are_accepted():
    outpost = OutpostFactory.build(
        spawner_class="kubespawner.KubeSpawner",  # image is a KubeSpawner trait
        allowed_overrides=["image"],
        allowed_override_values={"image": ["quay.io/jupyter/*"]},
    )
    outpost.full_clean()
