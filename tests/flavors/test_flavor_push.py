"""After a change of an Outpost's flavors, policies or rules, each Hub granted it is sent its
new flavor table (api-contract.md §6): once per change however many rows it touched, after
commit, and never failing the change when the broker is down."""

from contextlib import suppress

import pytest
from django.core.cache import cache
from django.db import transaction
from kombu.exceptions import OperationalError as KombuOperationalError

from flavors.models import HubPolicy
from flavors.services import flavors_changed
from outposts import tasks
from tests.factories import FlavorFactory, HubFactory, ServerFactory


@pytest.fixture
def server(db, fake_hub, outpost, hub):
    return ServerFactory(
        hub=hub,
        outpost=outpost,
        name="lab",
        user_name="olga",
        env=fake_hub.env("olga", "lab"),
        flavor=FlavorFactory(outpost=outpost, name="small", max=4),
    )


def test_a_change_is_pushed_once_to_each_hub_granted_the_outpost(db, outpost, hub, pushes):
    # given two Hubs on the Outpost and one elsewhere
    other = HubFactory(name="hub2", outposts=[outpost])
    HubFactory(name="elsewhere")

    # when one save changes several rows, each calling flavors_changed
    def save():
        for _ in range(3):
            flavors_changed(outpost=outpost)

    # then each of the two Hubs gets one push
    assert sorted(pushes(save)) == sorted([(hub.pk, outpost.pk), (other.pk, outpost.pk)])


def test_while_a_push_waits_more_changes_add_none_and_after_it_ran_they_do(
    db, outpost, hub, server, fake_hub, pushes
):
    assert pushes(lambda: flavors_changed(outpost=outpost)) == [(hub.pk, outpost.pk)]
    assert pushes(lambda: flavors_changed(outpost=outpost), waiting=True) == []
    tasks.hub_flavor_table_send_task(hub.pk, outpost.pk)
    assert pushes(lambda: flavors_changed(outpost=outpost), waiting=True) == [(hub.pk, outpost.pk)]


def test_nothing_is_pushed_for_a_change_that_rolled_back(db, outpost, hub, pushes):
    def change_that_fails():
        with suppress(RuntimeError), transaction.atomic():
            flavors_changed(outpost=outpost)
            raise RuntimeError("the save failed")

    assert pushes(change_that_fails) == []


def test_the_push_sends_the_hub_its_current_table(db, outpost, hub, server, fake_hub):
    # given a policy that caps the Hub at 2 of small
    HubPolicy.objects.create(outpost=outpost, hub=hub, flavor=server.flavor, cap=2)
    # when the push runs
    tasks.hub_flavor_table_send_task(hub.pk, outpost.pk)
    # then the Hub got the table its own flavors/ would answer, at the URL it gave
    (call,) = fake_hub.posts("/outpostflavors/local")
    assert call.authorization == "token flavors-token"
    assert (call.body["small"]["max"], call.body["small"]["current"]) == (2, 1)


def test_a_hub_that_never_started_a_server_there_is_not_called(db, outpost, hub, fake_hub):
    tasks.hub_flavor_table_send_task(hub.pk, outpost.pk)
    assert fake_hub.calls == []


def test_a_broker_that_is_down_costs_the_push_not_the_change(
    db, outpost, hub, monkeypatch, django_capture_on_commit_callbacks, caplog
):
    cache.clear()
    task = tasks.hub_flavor_table_send_task._get_current_object()

    def down(*args, **kwargs):
        raise KombuOperationalError("broker down")  # what Celery raises once it gave up

    monkeypatch.setattr(task, "apply_async", down)
    with django_capture_on_commit_callbacks(execute=True):
        flavors_changed(outpost=outpost)
    assert f"the flavor table push to Hub {hub.pk} was dropped (broker down)" in caplog.text
    assert not [record for record in caplog.records if record.exc_info]
    # and the next change tries again (the waiting mark was released)
    queued = []
    monkeypatch.setattr(task, "apply_async", lambda args, countdown: queued.append(args))
    with django_capture_on_commit_callbacks(execute=True):
        flavors_changed(outpost=outpost)
    assert queued == [[hub.pk, outpost.pk]]
    cache.clear()
