"""What the security review asked of the admin: wiring and Hubs are superusers' business."""

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from outposts.models import Hub, HubAPIKey, Outpost
from tests.factories import HubFactory, UserFactory

pytestmark = pytest.mark.django_db


def outpost_form(outpost: Outpost, **changes: str) -> dict[str, str]:
    """The Outpost change form as the admin page submits it, with ``changes`` applied."""
    return {
        "slug": outpost.slug,
        "name": outpost.name,
        "state": outpost.state,
        "spawner_class": outpost.spawner_class,
        "spawner_config": "{}",
        "allowed_overrides": "[]",
        "allowed_user_options": "[]",
        "min_system_uid": "1000",
        "unix_user_rule": "name",
        "unix_user_template": "",
        "unix_user_table": "{}",
        "max_servers_per_user": "",
        "queue": outpost.queue,
        "poll_interval": "00:00:30",
        "start_timeout": "00:10:00",
        "unknown_grace": "00:15:00",
        "server_callback_url": "",
        "allowed_node_patterns": "[]",
        "allowed_port_min": "1024",
        "allowed_port_max": "65535",
        "flavors-TOTAL_FORMS": "0",
        "flavors-INITIAL_FORMS": "0",
        "flavors-MIN_NUM_FORMS": "0",
        "flavors-MAX_NUM_FORMS": "1000",
        # The Outpost page's Hub policy and user rule inlines, left empty.
        "hub_policies-TOTAL_FORMS": "0",
        "hub_policies-INITIAL_FORMS": "0",
        "user_rules-TOTAL_FORMS": "0",
        "user_rules-INITIAL_FORMS": "0",
        **changes,
    }


def test_site_admin_cannot_route_their_outpost_to_other_workers(client, site_admin, two_outposts):
    # given a site admin of "mine"
    mine, theirs = two_outposts
    url = reverse("admin:outposts_outpost_change", args=[mine.pk])
    # when they post the other Outpost's queue and a new slug, with a spawner command
    response = client.post(
        url,
        outpost_form(
            mine,
            slug="renamed",
            queue=theirs.celery_queue,
            spawner_config='{"cmd": ["my-own-command"]}',
        ),
    )
    # then the spawner config (their own system) changed, the wiring did not
    assert response.status_code == 302, response.context["adminform"].form.errors
    mine.refresh_from_db()
    assert mine.spawner_config == {"cmd": ["my-own-command"]}
    assert (mine.slug, mine.queue, mine.celery_queue) == ("mine", "", "outpost.mine")
    # and the page shows slug and queue as text, not as inputs
    page = client.get(url)
    assert b'name="queue"' not in page.content
    assert b'name="slug"' not in page.content
    assert b'name="spawner_config"' in page.content


def test_site_admin_edits_user_option_allow_list_and_uid_floor(client, site_admin, two_outposts):
    # given a site admin of "mine"
    mine, _ = two_outposts
    # when they allow two user_options keys and raise the uid floor
    response = client.post(
        reverse("admin:outposts_outpost_change", args=[mine.pk]),
        outpost_form(mine, allowed_user_options='["partition", "nodes"]', min_system_uid="5000"),
    )
    # then both are saved
    assert response.status_code == 302, response.context["adminform"].form.errors
    mine.refresh_from_db()
    assert (mine.allowed_user_options, mine.min_system_uid) == (["partition", "nodes"], 5000)


def test_superuser_setting_a_used_queue_gets_a_form_error(client, superuser, two_outposts):
    # given a superuser on "mine"
    mine, theirs = two_outposts
    # when they give it the queue of "theirs"
    response = client.post(
        reverse("admin:outposts_outpost_change", args=[mine.pk]),
        outpost_form(mine, queue="outpost.theirs"),
    )
    # then the form says whose queue it is and nothing changes
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["queue"] == [
        "The queue outpost.theirs is already theirs's."
    ]
    mine.refresh_from_db()
    assert mine.queue == ""


def test_site_admin_sees_a_queue_clash_they_cannot_edit(client, site_admin, two_outposts):
    # given "theirs" explicitly on the queue "mine" would default to (e.g. set by apply_config)
    mine, theirs = two_outposts
    Outpost.objects.filter(pk=theirs.pk).update(queue="outpost.mine")
    # when the site admin of "mine" saves their Outpost (queue is read-only for them)
    response = client.post(
        reverse("admin:outposts_outpost_change", args=[mine.pk]), outpost_form(mine)
    )
    # then the clash is shown on the form, not a server error
    assert response.status_code == 200
    assert response.context["adminform"].form.non_field_errors() == [
        "queue: The queue outpost.mine is already theirs's."
    ]


def test_outpost_page_warns_about_simple_local_process_spawner(client, site_admin, two_outposts):
    # when a site admin opens an Outpost
    mine, _ = two_outposts
    page = client.get(reverse("admin:outposts_outpost_change", args=[mine.pk]))
    # then the spawner section says what SimpleLocalProcessSpawner exposes
    assert b"runs every user's server as the worker's own OS user" in page.content


@pytest.fixture
def staff_with_global_hub_permissions(client):
    """A staff user with every global Hub and Hub API key permission, but no superuser."""
    user = UserFactory(username="hubstaff", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__model__in=["hub", "hubapikey"])
    )
    client.force_login(user)
    return user


def test_hub_admin_ladder(client, two_outposts):
    # given a Hub, a staff user with the global Hub permissions and a superuser
    hub = HubFactory(name="hub1")
    staff = UserFactory(username="hubstaff", is_staff=True)
    staff.user_permissions.set(
        Permission.objects.filter(content_type__model__in=["hub", "hubapikey"])
    )
    root = UserFactory(username="root", is_staff=True, is_superuser=True)
    pages = [
        reverse("admin:outposts_hub_changelist"),
        reverse("admin:outposts_hub_change", args=[hub.pk]),
        reverse("admin:outposts_hub_add"),
    ]
    # when each opens the Hub pages
    client.force_login(staff)
    as_staff = [client.get(page).status_code for page in pages]
    index = client.get(reverse("admin:index"))
    client.force_login(root)
    as_root = [client.get(page).status_code for page in pages]
    # then the staff user is refused everywhere (and not offered Hubs), the superuser is not
    assert as_staff == [403, 403, 403]
    assert reverse("admin:outposts_hub_changelist").encode() not in index.content
    assert as_root == [200, 200, 200]


def test_staff_with_global_permissions_cannot_grant_outposts_or_mint_keys(
    client, staff_with_global_hub_permissions, two_outposts
):
    # given a Hub using "mine" only
    mine, theirs = two_outposts
    hub = HubFactory(name="hub1", outposts=[mine])
    # when the staff user posts the Hub with "theirs" added and runs "Create API key" on it
    change = client.post(
        reverse("admin:outposts_hub_change", args=[hub.pk]),
        {
            "name": "hub1",
            "is_active": "on",
            "outposts": [str(mine.pk), str(theirs.pk)],
            "callback_url_prefixes": "[]",
            "api_keys-TOTAL_FORMS": "0",
            "api_keys-INITIAL_FORMS": "0",
            "api_keys-MIN_NUM_FORMS": "0",
            "api_keys-MAX_NUM_FORMS": "1000",
        },
    )
    action = client.post(
        reverse("admin:outposts_hub_changelist"),
        {"action": "create_api_key", "_selected_action": [hub.pk]},
    )
    # then both are refused and nothing changed
    assert change.status_code == 403
    assert action.status_code == 403
    assert list(hub.outposts.all()) == [mine]
    assert not HubAPIKey.objects.exists()


def test_hub_form_validates_callback_prefixes(client, superuser):
    # when a superuser adds a Hub with a call-back prefix that is not an http(s) URL
    response = client.post(
        reverse("admin:outposts_hub_add"),
        {
            "name": "hub2",
            "is_active": "on",
            "callback_url_prefixes": '["file:///etc/"]',
            "new_secret": "a-secret",
            "api_keys-TOTAL_FORMS": "0",
            "api_keys-INITIAL_FORMS": "0",
            "api_keys-MIN_NUM_FORMS": "0",
            "api_keys-MAX_NUM_FORMS": "1000",
        },
    )
    # then the form refuses it on that field
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["callback_url_prefixes"] == [
        "Must be a JSON list of http(s) URL prefixes."
    ]
    assert not Hub.objects.filter(name="hub2").exists()


def test_hub_form_saves_callback_prefixes(client, superuser):
    # when a superuser adds a Hub with a call-back prefix
    response = client.post(
        reverse("admin:outposts_hub_add"),
        {
            "name": "hub2",
            "is_active": "on",
            "callback_url_prefixes": '["https://hub.example.org/hub/api/"]',
            "new_secret": "a-secret",
            "api_keys-TOTAL_FORMS": "0",
            "api_keys-INITIAL_FORMS": "0",
            "api_keys-MIN_NUM_FORMS": "0",
            "api_keys-MAX_NUM_FORMS": "1000",
        },
    )
    # then the Hub has it and its secret
    assert response.status_code == 302
    hub = Hub.objects.get(name="hub2")
    assert hub.callback_url_prefixes == ["https://hub.example.org/hub/api/"]
    assert hub.check_secret("a-secret")
