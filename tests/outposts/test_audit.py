"""The audit as admins read it: who changed what (old and new values, secrets masked), the
stops made by admins and the reconciler, and each admin seeing only their Outposts' entries."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from auditlog.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from flavors.models import Flavor, UserRule
from outposts import hubs
from outposts.lifecycle import reconcile
from outposts.models import Hub, HubAPIKey, Outpost, Server
from tests.factories import (
    HUB_SECRET,
    FlavorFactory,
    HubFactory,
    ServerFactory,
    UserFactory,
    UserRuleFactory,
)
from tests.support.admin_forms import change_form_data

pytestmark = pytest.mark.django_db

AUDIT = reverse("admin:auditlog_logentry_changelist")


def entries_of(model, pk) -> list[LogEntry]:
    return list(
        LogEntry.objects.filter(
            content_type=ContentType.objects.get_for_model(model), object_pk=str(pk)
        ).order_by("pk")
    )


def entry_page(client, entry: LogEntry):
    return client.get(reverse("admin:auditlog_logentry_change", args=[entry.pk]))


def test_an_outpost_changed_in_the_admin_is_recorded_with_who_and_old_and_new(
    client, site_admin, two_outposts
):
    # given a site admin on their Outpost's page
    mine, _ = two_outposts
    url = reverse("admin:outposts_outpost_change", args=[mine.pk])
    data = change_form_data(client.get(url))
    # when they drain it and change a spawner setting
    data["state"] = Outpost.State.DRAINING
    data["state_message"] = "Maintenance until Monday"
    data["spawner_config"] = '{"cmd": ["jupyterhub-singleuser"]}'
    response = client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    # then the audit names them and both values of each change
    [entry] = [e for e in entries_of(Outpost, mine.pk) if e.action == LogEntry.Action.UPDATE]
    assert entry.actor == site_admin
    assert entry.changes["state"] == ["active", "draining"]
    assert entry.changes["state_message"] == ["", "Maintenance until Monday"]
    assert json.loads(entry.changes["spawner_config"][1]) == {"cmd": ["jupyterhub-singleuser"]}
    # and their audit page lists it
    listing = client.get(AUDIT).content.decode()
    assert "siteadmin" in listing
    assert "state" in listing


CONFIG = """
outposts:
  - slug: local
    flavors:
      - {name: small, weight: %(weight)d, max_per_user: 2}
hubs:
  - {name: course1, secret: %(secret)s, outposts: [local]}
"""


def apply(tmp_path, **values) -> None:
    path = tmp_path / "portal.yaml"
    path.write_text(CONFIG % {"weight": 10, "secret": HUB_SECRET, **values})
    call_command("apply_config", str(path))


def test_apply_config_changes_are_recorded_with_the_command_as_actor(tmp_path):
    # given a portal written by apply_config
    apply(tmp_path)
    flavor = Flavor.objects.get(name="small")
    # when the file changes a flavor's weight and is applied again
    apply(tmp_path, weight=3)
    # then the flavor's creation and change are recorded, named after the command
    created, changed = entries_of(Flavor, flavor.pk)
    assert created.action == LogEntry.Action.CREATE
    assert changed.changes["weight"] == ["10", "3"]
    assert changed.actor is None
    assert changed.additional_data["actor"].startswith("apply_config ")
    # and so is the Outpost's creation
    assert entries_of(Outpost, flavor.outpost_id)[0].action == LogEntry.Action.CREATE


def test_a_hub_secret_change_never_shows_the_secret_or_its_digest(
    client, superuser, two_outposts, tmp_path
):
    # given a Hub with a secret and a flavor-update token
    mine, _ = two_outposts
    hub = HubFactory(name="hub1", outposts=[mine])
    old_digest = hub.secret_digest
    # when a superuser gives it a new secret and token
    response = client.post(
        reverse("admin:outposts_hub_change", args=[hub.pk]),
        {
            "name": "hub1",
            "is_active": "on",
            "outposts": [str(mine.pk)],
            "callback_url_prefixes": "[]",
            "new_secret": "the-brand-new-secret",
            "new_flavors_update_token": "the-brand-new-token",
            "api_keys-TOTAL_FORMS": "0",
            "api_keys-INITIAL_FORMS": "0",
            "api_keys-MIN_NUM_FORMS": "0",
            "api_keys-MAX_NUM_FORMS": "1000",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    hub.refresh_from_db()
    assert hub.secret_digest != old_digest
    # then the audit says both changed, by whom, and holds neither value nor digest
    [entry] = [e for e in entries_of(Hub, hub.pk) if e.actor == superuser]
    assert entry.changes["secret_digest"] == ["(hidden)", "(hidden)"]
    assert entry.changes["flavors_update_token"] == ["(empty)", "(hidden)"]
    stored = json.dumps([[e.changes, e.serialized_data] for e in LogEntry.objects.all()])
    pages = client.get(AUDIT).content.decode() + entry_page(client, entry).content.decode()
    for secret in ("the-brand-new-secret", "the-brand-new-token", old_digest, hub.secret_digest):
        assert secret not in stored
        assert secret not in pages
    assert "(hidden)" in pages


@pytest.fixture
def entries(two_outposts):
    """An audit entry of each kind: mine's Outpost and flavor, theirs' flavor, and a Hub."""
    mine, theirs = two_outposts
    FlavorFactory(outpost=mine, name="mine-small", display_name="Mine small")
    FlavorFactory(outpost=theirs, name="their-huge", display_name="Their huge")
    HubFactory(name="somehub")

    def of(model, **lookup) -> LogEntry:
        return entries_of(model, model.objects.get(**lookup).pk)[0]

    return {
        "mine": of(Outpost, slug="mine"),
        "mine_flavor": of(Flavor, name="mine-small"),
        "their_flavor": of(Flavor, name="their-huge"),
        "theirs": of(Outpost, slug="theirs"),
        "hub": of(Hub, name="somehub"),
    }


def test_staff_without_permission_sees_no_audit(client, entries):
    # given a staff user administering no Outpost
    client.force_login(UserFactory(is_staff=True))
    # when they open the audit and an entry
    listing = client.get(AUDIT)
    entry = entry_page(client, entries["mine"])
    # then they are refused both
    assert listing.status_code == 403
    assert entry.status_code in (302, 403, 404)


def test_site_admin_sees_only_their_outposts_entries(client, site_admin, entries):
    # given a site admin of "mine"
    # when they open the audit
    listing = client.get(AUDIT).content.decode()
    # then they see their Outpost's and flavor's entries, not theirs' or the Hub's
    assert "My cluster" in listing
    assert "Mine small" in listing
    assert "Their cluster" not in listing
    assert "Their huge" not in listing
    assert "somehub" not in listing
    # and the others' entries answer as if they did not exist
    assert entry_page(client, entries["mine_flavor"]).status_code == 200
    for other in ("their_flavor", "theirs", "hub"):
        response = entry_page(client, entries[other])
        assert response.status_code in (302, 404), other


def test_an_entry_of_a_deleted_flavor_stays_visible_to_its_outposts_admin(
    client, site_admin, two_outposts
):
    # given a flavor of "mine"
    mine, _ = two_outposts
    flavor = FlavorFactory(outpost=mine, name="gone", display_name="Gone soon")
    pk = flavor.pk
    # when it is deleted
    flavor.delete()
    # then its admin still sees the deletion
    [deleted] = [e for e in entries_of(Flavor, pk) if e.action == LogEntry.Action.DELETE]
    assert entry_page(client, deleted).status_code == 200


def test_superuser_sees_every_entry_hubs_included(client, superuser, entries):
    # when a superuser opens the audit
    listing = client.get(AUDIT).content.decode()
    # then every entry is listed
    for name in ("My cluster", "Their cluster", "Mine small", "Their huge", "somehub"):
        assert name in listing
    assert entry_page(client, entries["hub"]).status_code == 200


def test_an_admin_stop_is_recorded_with_the_admin_and_a_reason(client, site_admin, two_outposts):
    # given a running server on "mine"
    mine, _ = two_outposts
    server = ServerFactory(outpost=mine, user_name="olga")
    # when the site admin stops it from the server list
    response = client.post(
        reverse("admin:outposts_server_changelist"),
        {"action": "stop_servers", "_selected_action": [server.pk]},
        follow=True,
    )
    assert b"Asked 1 server(s) to stop." in response.content
    # then the audit records the stop, by them, with the reason
    [entry] = entries_of(Server, server.pk)
    assert entry.actor == site_admin
    assert entry.changes["status"] == ["running", "stopping"]
    assert entry.additional_data["reason"] == "Stopped from the admin"
    # and they see it in their audit
    page = entry_page(client, entry).content.decode()
    assert "Stopped from the admin" in page
    assert "siteadmin" in page


def test_a_reconciler_stop_is_recorded_with_the_reconciler_and_a_reason(
    client, site_admin, two_outposts
):
    # given a running server on "mine" past its runtime (polled just now)
    mine, _ = two_outposts
    server = ServerFactory(
        outpost=mine,
        end_at=timezone.now() - timedelta(seconds=1),
        last_poll_at=timezone.now(),
    )
    # when the reconciler's round runs
    reconcile.outpost_reconcile(outpost_id=mine.pk)
    # then the stop is recorded as the reconciler's, with the reason
    server.refresh_from_db()
    assert server.status == Server.Status.STOPPING
    [entry] = entries_of(Server, server.pk)
    assert entry.actor is None
    assert entry.additional_data["actor"] == "reconciler"
    assert entry.additional_data["reason"] == "Reached the end of its runtime"
    # and the site admin sees who did it
    page = entry_page(client, entry).content.decode()
    assert "reconciler" in page
    assert "Reached the end of its runtime" in page


def test_a_server_that_exited_is_recorded_as_ended_by_the_reconciler(two_outposts):
    # given a running server on "mine"
    mine, _ = two_outposts
    server = ServerFactory(outpost=mine)
    # when the reconciler's poll finds it exited with status 7
    reconcile._server_polled(server_id=server.pk, result=7)
    # then the audit records the end, with its status
    [entry] = entries_of(Server, server.pk)
    assert entry.changes["status"] == ["running", "stopped"]
    assert entry.additional_data == {
        "event": "stop",
        "reason": "Exited with status 7",
        "outpost_id": mine.pk,
        "actor": "reconciler",
    }


def test_a_rules_flavors_changed_are_recorded_for_its_outposts_admin(
    client, site_admin, two_outposts
):
    # given a user rule of "mine" and a flavor
    mine, _ = two_outposts
    rule = UserRuleFactory(outpost=mine, name="staff")
    flavor = FlavorFactory(outpost=mine, name="large", display_name="Large one")
    # when the flavor is added to the rule
    rule.flavors.add(flavor)
    # then the audit records what was added, and the Outpost's admin sees it
    [entry] = [e for e in entries_of(UserRule, rule.pk) if "flavors" in (e.changes or {})]
    assert entry.changes["flavors"]["operation"] == "add"
    assert entry.changes["flavors"]["objects"] == [str(flavor)]
    assert entry_page(client, entry).status_code == 200


def test_a_new_api_key_is_recorded_without_its_key_or_digest(client, superuser):
    # given a Hub
    hub = HubFactory(name="hub1")
    # when an API key is minted for it
    api_key, key = hubs.hub_api_key_create(hub=hub, name="k1")
    # then the audit records the key's creation, with neither the key nor its digest
    [entry] = entries_of(HubAPIKey, api_key.pk)
    assert entry.action == LogEntry.Action.CREATE
    assert entry.changes["key_digest"] == ["(empty)", "(hidden)"]
    page = entry_page(client, entry).content.decode()
    assert "hub1 key k1" in page
    for secret in (key, api_key.key_digest):
        assert secret not in json.dumps(entry.changes)
        assert secret not in page
