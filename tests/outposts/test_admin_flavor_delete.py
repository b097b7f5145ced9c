"""Deleting a flavor that servers used: the admin refuses (the servers' records keep it) and
says how to take it out of use instead, whichever way the admin tried."""

import pytest
from django.urls import reverse

from flavors.models import Flavor
from outposts.models import Server
from tests.factories import FlavorFactory, ServerFactory
from tests.support.admin_forms import change_form_data
from tests.support.admin_pages import texts_of_class

pytestmark = pytest.mark.django_db

CLOSE_INSTEAD = "set its max to 0"


@pytest.fixture
def used_flavor(two_outposts):
    mine, _ = two_outposts
    flavor = FlavorFactory(outpost=mine, name="gpu", display_name="GPU")
    ServerFactory(outpost=mine, flavor=flavor, status=Server.Status.STOPPED)
    return flavor


def test_the_delete_page_of_a_used_flavor_says_to_close_it_instead(client, site_admin, used_flavor):
    # when the site admin asks to delete a flavor an ended server used
    page = client.get(reverse("admin:flavors_flavor_delete", args=[used_flavor.pk]))
    # then the page refuses, naming the server, and says how to close the flavor instead
    text = page.content.decode()
    assert "would require deleting the following protected related objects" in text
    assert CLOSE_INSTEAD in " ".join(texts_of_class(text, "p", "flavor-close-instead"))
    assert "Yes, I’m sure" not in text


def test_deleting_used_flavors_from_the_list_says_to_close_them_instead(
    client, site_admin, used_flavor
):
    # when the site admin runs "Delete selected flavors" on it
    page = client.post(
        reverse("admin:flavors_flavor_changelist"),
        {"action": "delete_selected", "_selected_action": [used_flavor.pk]},
    )
    # then the confirmation refuses and says how to close the flavor instead
    text = page.content.decode()
    assert "would require deleting the following protected related objects" in text
    assert CLOSE_INSTEAD in " ".join(texts_of_class(text, "p", "flavor-close-instead"))


def test_deleting_a_used_flavor_on_its_outpost_page_says_to_close_it_instead(
    client, site_admin, used_flavor
):
    # given the Outpost's page, with the flavor's "Delete?" ticked
    url = reverse("admin:outposts_outpost_change", args=[used_flavor.outpost_id])
    data = change_form_data(client.get(url))
    row = next(
        key for key, value in data.items() if key.endswith("-id") and value == str(used_flavor.pk)
    )
    data[row.removesuffix("-id") + "-DELETE"] = "on"
    # when the site admin saves
    page = client.post(url, data)
    # then the page refuses, the flavor stays, and the error says how to close it instead
    assert page.status_code == 200
    errors = " ".join(texts_of_class(page.content.decode(), "ul", "errorlist"))
    assert "protected related objects" in errors, errors
    assert CLOSE_INSTEAD in errors, errors
    assert Flavor.objects.filter(pk=used_flavor.pk).exists()


def test_a_flavor_no_server_used_is_still_deleted(client, site_admin, two_outposts):
    # given a flavor no server ever used
    mine, _ = two_outposts
    unused = FlavorFactory(outpost=mine, name="spare")
    url = reverse("admin:flavors_flavor_delete", args=[unused.pk])
    # when the site admin confirms its deletion
    confirm = client.get(url)
    done = client.post(url, {"post": "yes"})
    # then it is offered without the hint, and deleted
    assert "Yes, I’m sure" in confirm.content.decode()
    assert texts_of_class(confirm.content.decode(), "p", "flavor-close-instead") == []
    assert done.status_code == 302
    assert not Flavor.objects.filter(pk=unused.pk).exists()
