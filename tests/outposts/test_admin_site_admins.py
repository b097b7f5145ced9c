"""A superuser makes staff users site admins of an Outpost with one picker on its page."""

import pytest
from django.urls import reverse

from outposts.selectors import outpost_site_admins
from tests.factories import UserFactory
from tests.support.admin_forms import change_form_data

pytestmark = pytest.mark.django_db


def change_url(outpost) -> str:
    return reverse("admin:outposts_outpost_change", args=[outpost.pk])


def test_a_superuser_picks_the_site_admins_who_then_see_that_outpost_only(
    client, superuser, two_outposts
):
    mine, theirs = two_outposts
    ops = UserFactory(username="ops", is_staff=True)
    # when the superuser picks ops on mine's page
    data = change_form_data(client.get(change_url(mine)))
    data["site_admins"] = [str(ops.pk)]
    assert client.post(change_url(mine), data).status_code == 302
    # then ops administers mine, and only mine
    assert list(outpost_site_admins(outpost=mine)) == [ops]
    client.force_login(ops)
    assert client.get(change_url(mine)).status_code == 200
    assert client.get(change_url(theirs)).status_code == 302  # not there: to the index
    # and the superuser removes them again with the same picker
    client.force_login(superuser)
    data = change_form_data(client.get(change_url(mine)))
    data["site_admins"] = []
    assert client.post(change_url(mine), data).status_code == 302
    assert list(outpost_site_admins(outpost=mine)) == []


def test_a_site_admin_has_no_picker_and_cannot_post_one(client, site_admin, two_outposts):
    mine, _ = two_outposts
    page = client.get(change_url(mine))
    assert "site_admins" not in page.context["adminform"].form.fields
    intruder = UserFactory(username="friend", is_staff=True)
    data = change_form_data(page)
    data["site_admins"] = [str(intruder.pk)]
    assert client.post(change_url(mine), data).status_code == 302
    assert list(outpost_site_admins(outpost=mine)) == [site_admin]
