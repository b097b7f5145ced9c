"""The admin walked up the permission ladder, as a site admin would use it."""

import pytest
from django.urls import reverse

from outposts import hubs
from outposts.models import Hub, HubAPIKey, Server
from portal.crypto import credential_digest
from tests.factories import (
    HUB_SECRET,
    FlavorFactory,
    HubFactory,
    ServerFactory,
    SpawnEventFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


def staff_user(**kwargs):
    return UserFactory(is_staff=True, **kwargs)


def test_anonymous_is_sent_to_the_login_page(client, two_outposts):
    # given an anonymous visitor
    mine, _ = two_outposts
    # when they open an Outpost's page
    response = client.get(reverse("admin:outposts_outpost_change", args=[mine.pk]))
    # then they are redirected to log in
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_staff_without_permission_sees_no_outpost(client, two_outposts):
    # given a staff user with no permission at all
    mine, _ = two_outposts
    client.force_login(staff_user())
    # when they open the admin, the Outpost list and an Outpost
    index = client.get(reverse("admin:index"))
    changelist = client.get(reverse("admin:outposts_outpost_changelist"))
    change = client.get(reverse("admin:outposts_outpost_change", args=[mine.pk]))
    servers = client.get(reverse("admin:outposts_server_changelist"))
    # then nothing of the Outposts is offered or shown
    assert index.status_code == 200
    assert b"My cluster" not in index.content
    assert reverse("admin:outposts_outpost_changelist").encode() not in index.content
    assert changelist.status_code == 403
    assert change.status_code in (302, 403)
    assert servers.status_code == 403


def test_site_admin_sees_only_their_outpost(client, site_admin, two_outposts):
    # given a site admin of "mine"
    mine, theirs = two_outposts
    # when they list Outposts and open each
    changelist = client.get(reverse("admin:outposts_outpost_changelist"))
    own = client.get(reverse("admin:outposts_outpost_change", args=[mine.pk]))
    other = client.get(reverse("admin:outposts_outpost_change", args=[theirs.pk]))
    # then theirs is absent and answers as if it did not exist
    assert changelist.status_code == 200
    assert b"My cluster" in changelist.content
    assert b"Their cluster" not in changelist.content
    assert own.status_code == 200
    # Django's admin answers an object outside get_queryset with a redirect to the index.
    assert other.status_code == 302
    assert other["Location"] == reverse("admin:index")


def test_site_admin_changes_their_outpost_and_its_flavors(client, site_admin, two_outposts):
    # given a site admin of "mine" with one flavor on it
    mine, _ = two_outposts
    flavor = FlavorFactory(outpost=mine, name="small", display_name="Small")
    url = reverse("admin:outposts_outpost_change", args=[mine.pk])
    form = {
        "slug": "mine",
        "name": "My renamed cluster",
        "state": "active",
        "spawner_class": "jupyterhub.spawner.SimpleLocalProcessSpawner",
        "spawner_config": "{}",
        "allowed_overrides": "[]",
        "allowed_user_options": "[]",
        "min_system_uid": "1000",
        "unix_user_rule": "name",
        "unix_user_template": "",
        "unix_user_table": "{}",
        "max_servers_per_user": "",
        "queue": "",
        "poll_interval": "00:00:30",
        "start_timeout": "00:10:00",
        "unknown_grace": "00:15:00",
        "server_callback_url": "",
        "allowed_node_patterns": "[]",
        "allowed_port_min": "1024",
        "allowed_port_max": "65535",
        "flavors-TOTAL_FORMS": "1",
        "flavors-INITIAL_FORMS": "1",
        "flavors-MIN_NUM_FORMS": "0",
        "flavors-MAX_NUM_FORMS": "1000",
        # The Outpost page's Hub policy and user rule inlines, left empty.
        "hub_policies-TOTAL_FORMS": "0",
        "hub_policies-INITIAL_FORMS": "0",
        "user_rules-TOTAL_FORMS": "0",
        "user_rules-INITIAL_FORMS": "0",
        "flavors-0-id": str(flavor.pk),
        "flavors-0-outpost": str(mine.pk),
        "flavors-0-name": "small",
        "flavors-0-display_name": "Small, 2 CPUs",
        "flavors-0-description": "",
        "flavors-0-weight": "5",
        "flavors-0-max": "3",
        "flavors-0-max_per_user": "",
        "flavors-0-runtime": "02:00:00",
        "flavors-0-resources": "{}",
    }
    # when they save the Outpost with a changed name and flavor
    response = client.post(url, form)
    # then both are changed
    assert response.status_code == 302, response.context["adminform"].form.errors
    mine.refresh_from_db()
    flavor.refresh_from_db()
    assert mine.name == "My renamed cluster"
    assert (flavor.display_name, flavor.max) == ("Small, 2 CPUs", 3)


def test_site_admin_cannot_add_or_delete_outposts(client, site_admin, two_outposts):
    # given a site admin of "mine"
    mine, _ = two_outposts
    # when they try to add or delete an Outpost
    add = client.get(reverse("admin:outposts_outpost_add"))
    delete = client.post(reverse("admin:outposts_outpost_delete", args=[mine.pk]), {"post": "yes"})
    # then they are refused and the Outpost stays
    assert add.status_code == 403
    assert delete.status_code == 403
    mine.refresh_from_db()


def test_site_admin_sees_only_their_servers(client, site_admin, two_outposts):
    # given a server on each Outpost, with events
    mine, theirs = two_outposts
    hub = HubFactory(name="hub1", outposts=[mine, theirs])
    own = ServerFactory(outpost=mine, hub=hub, user_name="alice", env={"TOKEN": "s3cret-token"})
    SpawnEventFactory(server=own, message="<b>Pulling</b> image")
    other = ServerFactory(outpost=theirs, hub=hub, user_name="mallory")
    # when they list servers and open each
    changelist = client.get(reverse("admin:outposts_server_changelist"))
    detail = client.get(reverse("admin:outposts_server_change", args=[own.pk]))
    forbidden = client.get(reverse("admin:outposts_server_change", args=[other.pk]))
    # then only their server is listed and shown, its env never, its events escaped
    assert changelist.status_code == 200
    assert b"alice" in changelist.content
    assert b"mallory" not in changelist.content
    assert b"Their cluster" not in changelist.content  # not even as a filter choice
    assert detail.status_code == 200
    assert b"s3cret-token" not in detail.content
    assert b"&lt;b&gt;Pulling&lt;/b&gt; image" in detail.content
    assert b"<b>Pulling</b>" not in detail.content
    assert forbidden.status_code == 302
    assert forbidden["Location"] == reverse("admin:index")


def test_server_list_filters_and_search(client, site_admin, two_outposts):
    # given two servers on "mine"
    mine, _ = two_outposts
    ServerFactory(outpost=mine, user_name="alice", status=Server.Status.RUNNING)
    ServerFactory(outpost=mine, user_name="bob", status=Server.Status.STOPPED)
    url = reverse("admin:outposts_server_changelist")
    # when they filter by status and search by user name
    by_status = client.get(url, {"status__exact": "stopped"})
    by_search = client.get(url, {"q": "alice"})
    # then the lists show the matching server only
    assert b"bob" in by_status.content and b"alice" not in by_status.content
    assert b"alice" in by_search.content and b"bob" not in by_search.content


def test_server_list_filters_by_outpost_hub_and_flavor_and_searches_server_names(
    client, superuser, two_outposts
):
    # given servers on two Outposts, of two Hubs and two flavors
    mine, theirs = two_outposts
    small, large = (
        FlavorFactory(outpost=mine, name="small"),
        FlavorFactory(outpost=mine, name="large"),
    )
    hub1, hub2 = HubFactory(name="hub1"), HubFactory(name="hub2")
    ServerFactory(outpost=mine, hub=hub1, flavor=small, user_name="alice", name="lab")
    ServerFactory(outpost=mine, hub=hub2, flavor=large, user_name="bob", name="gpu-run")
    ServerFactory(outpost=theirs, hub=hub1, user_name="carol", name="notebook")
    url = reverse("admin:outposts_server_changelist")

    def users(**query) -> set[str]:
        content = client.get(url, query).content
        return {name for name in ("alice", "bob", "carol") if name.encode() in content}

    # when they open the list, then its sidebar offers a filter by each
    sidebar = client.get(url).content.decode()
    for lookup, pk in (("outpost__id__exact", mine.pk), ("hub__id__exact", hub1.pk)):
        assert f"?{lookup}={pk}" in sidebar, lookup
    assert f"?flavor__id__exact={large.pk}" in sidebar
    # and when they filter and search, the lists show the matching servers only
    assert users(outpost__id__exact=mine.pk) == {"alice", "bob"}
    assert users(hub__id__exact=hub1.pk) == {"alice", "carol"}
    assert users(flavor__id__exact=large.pk) == {"bob"}
    assert users(q="gpu-run") == {"bob"}


def test_stop_action_stops_only_allowed_servers(client, site_admin, two_outposts):
    # given a running server on each Outpost
    mine, theirs = two_outposts
    own = ServerFactory(outpost=mine)
    other = ServerFactory(outpost=theirs)
    # when the site admin runs "Stop selected servers" naming both
    response = client.post(
        reverse("admin:outposts_server_changelist"),
        {"action": "stop_servers", "_selected_action": [own.pk, other.pk]},
        follow=True,
    )
    # then only their own server is stopping
    assert b"Asked 1 server(s) to stop." in response.content
    own.refresh_from_db()
    other.refresh_from_db()
    assert own.status == Server.Status.STOPPING
    assert own.stop_requested_at is not None
    assert other.status == Server.Status.RUNNING


def test_site_admin_sees_only_their_flavors_and_outpost_choices(client, site_admin, two_outposts):
    # given a flavor on each Outpost
    mine, theirs = two_outposts
    FlavorFactory(outpost=mine, display_name="Mine small")
    other = FlavorFactory(outpost=theirs, display_name="Their big")
    # when they list flavors, open the add form and the other flavor
    changelist = client.get(reverse("admin:flavors_flavor_changelist"))
    add = client.get(reverse("admin:flavors_flavor_add"))
    forbidden = client.get(reverse("admin:flavors_flavor_change", args=[other.pk]))
    # then only their flavor and their Outpost are offered
    assert b"Mine small" in changelist.content
    assert b"Their big" not in changelist.content
    assert b"My cluster" in add.content
    assert b"Their cluster" not in add.content
    assert forbidden.status_code == 302


def test_site_admin_cannot_move_a_flavor_to_another_outpost(client, site_admin, two_outposts):
    # given a site admin of "mine"
    _, theirs = two_outposts
    # when they post a new flavor naming the other Outpost
    response = client.post(
        reverse("admin:flavors_flavor_add"),
        {
            "outpost": str(theirs.pk),
            "name": "sneaky",
            "display_name": "Sneaky",
            "weight": "0",
            "resources": "{}",
        },
    )
    # then the form refuses the choice and no flavor is created
    assert response.status_code == 200
    assert b"Select a valid choice" in response.content
    assert not theirs.flavors.exists()


def test_site_admin_does_not_see_hubs(client, site_admin):
    # given a Hub
    HubFactory(name="hub1")
    # when the site admin opens the Hub list
    response = client.get(reverse("admin:outposts_hub_changelist"))
    # then it is refused: Hubs span Outposts and hold credentials
    assert response.status_code == 403


def test_superuser_sees_every_outpost(client, superuser, two_outposts):
    # when a superuser lists Outposts
    response = client.get(reverse("admin:outposts_outpost_changelist"))
    # then both are there
    assert b"My cluster" in response.content and b"Their cluster" in response.content


def test_hub_new_secret_is_write_only(client, superuser, two_outposts):
    # given a superuser adding a Hub with a secret
    mine, _ = two_outposts
    response = client.post(
        reverse("admin:outposts_hub_add"),
        {
            "name": "hub2",
            "is_active": "on",
            "outposts": [str(mine.pk)],
            "new_secret": "the-new-secret",
            "new_flavors_update_token": "",
            "api_keys-TOTAL_FORMS": "0",
            "api_keys-INITIAL_FORMS": "0",
            "api_keys-MIN_NUM_FORMS": "0",
            "api_keys-MAX_NUM_FORMS": "1000",
        },
    )
    assert response.status_code == 302
    hub = Hub.objects.get(name="hub2")
    # when they open the Hub again
    page = client.get(reverse("admin:outposts_hub_change", args=[hub.pk]))
    # then the secret works, and neither it nor its digest is shown
    assert hub.check_secret("the-new-secret")
    assert b"the-new-secret" not in page.content
    assert hub.secret_digest.encode() not in page.content
    assert b"new_secret" in page.content


def test_hub_without_secret_is_refused(client, superuser):
    # when a superuser adds a Hub without a secret
    response = client.post(
        reverse("admin:outposts_hub_add"),
        {
            "name": "hub3",
            "is_active": "on",
            "api_keys-TOTAL_FORMS": "0",
            "api_keys-INITIAL_FORMS": "0",
            "api_keys-MIN_NUM_FORMS": "0",
            "api_keys-MAX_NUM_FORMS": "1000",
        },
    )
    # then the form says so
    assert response.status_code == 200
    assert b"A new Hub needs a secret." in response.content
    assert not Hub.objects.filter(name="hub3").exists()


def test_hub_added_with_outposts_is_logged(client, superuser, two_outposts):
    # when a superuser adds a Hub using both Outposts
    response = client.post(
        reverse("admin:outposts_hub_add"),
        {
            "name": "hub2",
            "is_active": "on",
            "outposts": [str(outpost.pk) for outpost in two_outposts],
            "callback_url_prefixes": "[]",
            "new_secret": "a-secret",
            "api_keys-TOTAL_FORMS": "0",
            "api_keys-INITIAL_FORMS": "0",
            "api_keys-MIN_NUM_FORMS": "0",
            "api_keys-MAX_NUM_FORMS": "1000",
        },
    )
    # then they land on the list, the Hub uses both, and its history shows the addition
    hub = Hub.objects.get(name="hub2")
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:outposts_hub_changelist")
    assert set(hub.outposts.all()) == set(two_outposts)
    history = client.get(reverse("admin:outposts_hub_history", args=[hub.pk])).content.decode()
    assert "Added." in history


def test_hub_change_sets_outposts_token_and_inline_keys_and_is_logged(
    client, superuser, two_outposts
):
    # given a Hub using "mine", with an API key
    mine, theirs = two_outposts
    hub = HubFactory(name="hub1", outposts=[mine])
    api_key, _ = hubs.hub_api_key_create(hub=hub, name="k1")
    # when a superuser moves it to "theirs", turns it off, sets a token and revokes the key
    response = client.post(
        reverse("admin:outposts_hub_change", args=[hub.pk]),
        {
            "name": "hub1",
            "outposts": [str(theirs.pk)],
            "callback_url_prefixes": '["http://127.0.0.1:"]',
            "new_secret": "",
            "new_flavors_update_token": "a-token",
            "api_keys-TOTAL_FORMS": "1",
            "api_keys-INITIAL_FORMS": "1",
            "api_keys-MIN_NUM_FORMS": "0",
            "api_keys-MAX_NUM_FORMS": "1000",
            "api_keys-0-id": str(api_key.pk),
            "api_keys-0-hub": str(hub.pk),
            "api_keys-0-revoked": "on",
        },
    )
    # then all of it is stored, the secret kept
    assert response.status_code == 302, response.context["adminform"].form.errors
    hub.refresh_from_db()
    api_key.refresh_from_db()
    assert list(hub.outposts.all()) == [theirs]
    assert not hub.is_active
    assert hub.flavors_update_token == "a-token"
    assert hub.check_secret(HUB_SECRET)
    assert api_key.revoked
    # and the Hub's history names what changed
    history = client.get(reverse("admin:outposts_hub_history", args=[hub.pk])).content.decode()
    assert "Changed Is active, Outposts, " in history
    assert "new_flavors_update_token." in history
    assert "Changed Revoked for Hub API key “hub1 key k1”." in history


def test_hub_change_of_settings_alone_is_saved(client, superuser, two_outposts):
    # given an active Hub using "mine"
    mine, _ = two_outposts
    hub = HubFactory(name="hub1", outposts=[mine])
    # when a superuser renames it and turns it off, Outposts and credentials left as they are
    response = client.post(
        reverse("admin:outposts_hub_change", args=[hub.pk]),
        {
            "name": "hub1-renamed",
            "outposts": [str(mine.pk)],
            "callback_url_prefixes": '["https://hub.example.org/hub/api/"]',
            "api_keys-TOTAL_FORMS": "0",
            "api_keys-INITIAL_FORMS": "0",
            "api_keys-MIN_NUM_FORMS": "0",
            "api_keys-MAX_NUM_FORMS": "1000",
        },
    )
    # then the new values are stored
    assert response.status_code == 302, response.context["adminform"].form.errors
    hub.refresh_from_db()
    assert (hub.name, hub.is_active) == ("hub1-renamed", False)
    assert hub.callback_url_prefixes == ["https://hub.example.org/hub/api/"]
    assert hub.check_secret(HUB_SECRET)
    assert list(hub.outposts.all()) == [mine]


def test_create_api_key_action_shows_the_key_once(client, superuser):
    # given a Hub
    hub = HubFactory(name="hub1")
    # when a superuser runs "Create API key" on it
    response = client.post(
        reverse("admin:outposts_hub_changelist"),
        {"action": "create_api_key", "_selected_action": [hub.pk]},
    )
    # then the page shows a key whose digest alone is stored
    assert response.status_code == 200
    key = response.context["created"][0][1]
    assert key.encode() in response.content
    stored = HubAPIKey.objects.get(hub=hub)
    assert stored.key_digest == credential_digest(key)
    assert key not in stored.key_digest
    # and the Hub's page does not show it again
    page = client.get(reverse("admin:outposts_hub_change", args=[hub.pk]))
    assert key.encode() not in page.content
    assert stored.key_digest.encode() not in page.content
