"""A server's page in the admin: titled by its Hub user and name, with a Stop button that
posts (with CSRF) to the same stop as the list's action, for the servers the admin may stop."""

import re

import pytest
from auditlog.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.urls import reverse

from outposts.models import Server
from tests.factories import ServerFactory, UserFactory
from tests.support.admin_pages import messages

pytestmark = pytest.mark.django_db


def page_of(server: Server) -> str:
    return reverse("admin:outposts_server_change", args=[server.pk])


def stop_url(server: Server) -> str:
    return reverse("admin:outposts_server_stop", args=[server.pk])


def stop_forms(html: str) -> list[str]:
    """The actions of the page's Stop forms."""
    return re.findall(r'<form method="post" action="([^"]+)" class="server-stop">', html)


def stops_audited(server: Server) -> int:
    return LogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(Server),
        object_pk=str(server.pk),
        additional_data__event="stop",
    ).count()


def test_the_page_is_titled_by_the_hub_user_and_the_server_name(client, site_admin, two_outposts):
    # given a named server and a default one on "mine"
    mine, _ = two_outposts
    named = ServerFactory(outpost=mine, user_name="alice", name="gpu-notebook")
    default = ServerFactory(outpost=mine, user_name="bob", name="")
    # when the site admin opens their pages
    named_page = client.get(page_of(named)).content.decode()
    default_page = client.get(page_of(default)).content.decode()
    # then each is titled by whose server it is and its name, not "View server"
    assert "<h1>alice’s server gpu-notebook</h1>" in named_page
    head = named_page.split("</title>")[0]
    assert "alice’s server gpu-notebook" in head
    assert "Running on My cluster, Hub hub" in head
    assert "<h1>bob’s default server</h1>" in default_page
    assert "View server" not in named_page


def test_stop_on_the_page_stops_the_server_and_records_who(client, site_admin, two_outposts):
    # given a running server on "mine", whose page offers Stop
    mine, _ = two_outposts
    server = ServerFactory(outpost=mine, user_name="alice", name="lab")
    page = client.get(page_of(server)).content.decode()
    assert stop_forms(page) == [stop_url(server)]
    assert "csrfmiddlewaretoken" in page.split('class="server-stop"')[1].split("</form>")[0]
    # when the site admin presses it
    answer = client.post(stop_url(server), follow=True)
    # then they are back on the page, told the server was asked to stop, without the button
    assert answer.redirect_chain == [(page_of(server), 302)]
    assert messages(answer.content.decode()) == ["Asked alice’s server lab to stop."]
    assert stop_forms(answer.content.decode()) == []
    # and the server is stopping, the stop recorded as theirs
    server.refresh_from_db()
    assert server.status == Server.Status.STOPPING
    assert server.stop_requested_at is not None
    assert stops_audited(server) == 1


def test_stop_without_the_csrf_token_is_refused(site_admin, two_outposts):
    # given a browser session of the site admin that checks CSRF, as a real browser's does
    mine, _ = two_outposts
    server = ServerFactory(outpost=mine)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(site_admin)
    # when another site makes that browser post to the Stop URL (no token)
    answer = browser.post(stop_url(server))
    # then the post is refused and the server keeps running
    assert answer.status_code == 403
    server.refresh_from_db()
    assert server.status == Server.Status.RUNNING
    assert stops_audited(server) == 0


def test_stop_answers_only_a_post(client, site_admin, two_outposts):
    # given a running server on "mine"
    mine, _ = two_outposts
    server = ServerFactory(outpost=mine)
    # when the stop URL is fetched (a link, a prefetch)
    answer = client.get(stop_url(server))
    # then nothing is stopped
    assert answer.status_code == 405
    server.refresh_from_db()
    assert server.status == Server.Status.RUNNING


def test_another_outposts_server_cannot_be_stopped(client, site_admin, two_outposts):
    # given a running server on the Outpost the site admin does not administer
    _, theirs = two_outposts
    server = ServerFactory(outpost=theirs)
    # when they post to its Stop URL
    answer = client.post(stop_url(server))
    # then it answers as if the server did not exist, and the server keeps running
    assert answer.status_code == 404
    server.refresh_from_db()
    assert server.status == Server.Status.RUNNING
    assert stops_audited(server) == 0


def test_staff_without_permission_cannot_stop(client, two_outposts):
    # given a staff user administering no Outpost, and a running server
    mine, _ = two_outposts
    server = ServerFactory(outpost=mine)
    client.force_login(UserFactory(is_staff=True))
    # when they post to its Stop URL
    answer = client.post(stop_url(server))
    # then it is refused and the server keeps running
    assert answer.status_code == 404
    server.refresh_from_db()
    assert server.status == Server.Status.RUNNING


@pytest.mark.parametrize("status", [Server.Status.STOPPED, Server.Status.FAILED])
def test_an_ended_server_offers_no_stop_and_refuses_one(client, site_admin, two_outposts, status):
    # given a server on "mine" that has ended
    mine, _ = two_outposts
    server = ServerFactory(outpost=mine, user_name="carol", name="old", status=status)
    # when the site admin opens its page, then it offers no Stop
    assert stop_forms(client.get(page_of(server)).content.decode()) == []
    # and when they post to its Stop URL anyway (a page left open)
    answer = client.post(stop_url(server), follow=True)
    # then they are told it has ended, and nothing changes or is recorded
    assert messages(answer.content.decode()) == ["Nothing to stop: carol’s server old has ended."]
    server.refresh_from_db()
    assert server.status == status
    assert server.stop_requested_at is None
    assert stops_audited(server) == 0
