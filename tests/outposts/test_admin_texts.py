"""Texts of the admin as a reader sees them: help texts naming placeholders such as <slug>
show them, and the header's links lead somewhere."""

import pytest
from django.apps import apps
from django.urls import reverse
from django.utils.html import strip_tags

from tests.factories import HubFactory
from tests.support.admin_pages import help_texts

pytestmark = pytest.mark.django_db

PROJECT_APPS = ("outposts", "flavors", "projects", "tunnels", "audit")


def test_the_outpost_page_shows_the_placeholders_of_its_help_texts(client, superuser, two_outposts):
    # given a superuser, who edits the slug and the queue
    mine, _ = two_outposts
    # when they open an Outpost's page
    page = client.get(reverse("admin:outposts_outpost_change", args=[mine.pk]))
    # then the help texts read as written, <slug> included
    shown = help_texts(page.content.decode())
    assert "Names the API base URL /outposts/<slug>/." in shown
    assert "Celery queue of this Outpost's tasks; empty = outpost.<slug>." in shown


def test_read_only_fields_show_the_placeholders_too(client, site_admin, two_outposts):
    # given a site admin, for whom the slug and the queue are read-only
    mine, _ = two_outposts
    # when they open their Outpost's page
    page = client.get(reverse("admin:outposts_outpost_change", args=[mine.pk]))
    # then the read-only fields' help texts read as written as well
    shown = help_texts(page.content.decode())
    assert "Names the API base URL /outposts/<slug>/." in shown
    assert "Celery queue of this Outpost's tasks; empty = outpost.<slug>." in shown


def test_the_hub_page_shows_the_tunnel_restart_path(client, superuser):
    # given a Hub
    hub = HubFactory(name="course-hub")
    # when a superuser opens its page
    page = client.get(reverse("admin:outposts_hub_change", args=[hub.pk]))
    # then the help text names the path it may post to
    assert (
        "The Hub may ask an Outpost it uses to re-create its tunnels through a jump host or "
        "to a node (POST <base>tunnels/restart)."
    ) in help_texts(page.content.decode())


def test_no_help_text_holds_markup_a_browser_would_swallow():
    # given every field of the portal's own models
    fields = [
        field
        for app in PROJECT_APPS
        for model in apps.get_app_config(app).get_models()
        for field in model._meta.get_fields()
        if getattr(field, "help_text", "")
    ]
    assert fields
    # then each help text, read as the HTML the admin renders it as, loses nothing: angle
    # brackets are written escaped (django.utils.html.escape)
    swallowed = {
        f"{field.model._meta.label}.{field.name}": field.help_text
        for field in fields
        if strip_tags(str(field.help_text)) != str(field.help_text)
    }
    assert swallowed == {}


def test_the_header_offers_no_view_site_link_to_the_api_root(client, superuser):
    # when an admin opens the admin's index
    page = client.get(reverse("admin:index")).content.decode()
    # then the header has no "View site" (the site root is the API: a JSON 404 to a browser)
    assert "View site" not in page
    assert 'href="/"' not in page
    # and keeps the links that lead somewhere
    assert reverse("admin:logout") in page
    assert reverse("admin:password_change") in page
