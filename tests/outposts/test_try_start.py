"""The Outpost admin's "Try a start": a real test start of the Outpost's spawner settings,
stopped right after, with the spawner's log on the page (outposts/trial.py)."""

from pathlib import Path

import pytest
from django.urls import reverse

from outposts.models import Server
from tests.factories import FlavorFactory
from tests.support.processes import alive, wait_until
from tests.support.spawners import serve_config

pytestmark = pytest.mark.django_db

TRY_USER = "outpost-try"


def try_start(client, *outposts):
    return client.post(
        reverse("admin:outposts_outpost_changelist"),
        {"action": "try_start", "_selected_action": [outpost.pk for outpost in outposts]},
        follow=True,
    )


def test_a_good_outpost_starts_a_test_server_and_stops_it(client, site_admin, two_outposts, home):
    # given the site admin's Outpost, whose spawner starts a real server process (and writes
    # its pid to the user's home)
    mine, _ = two_outposts
    mine.spawner_class = "tests.support.spawners.QueuedStartSpawner"
    mine.spawner_config = serve_config(home, start_delay=0)
    mine.save()
    # when they try a start on it
    page = try_start(client, mine)
    # then the page says the spawner started a server and stopped it, with its log
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-outcome="started"' in html
    assert "The spawner started a server at 127.0.0.1:" in html
    assert ", and stopped it." in html
    assert "INFO Spawning " in page.context["result"].log_lines[0]
    # and it ran as the dedicated test user, and is gone
    pid = int(Path(home, TRY_USER, "started.pid").read_text())
    wait_until(lambda: not alive(pid), timeout=10, what="the test server's process to end")
    # and nothing of it counts: no server row, so no slot and no usage
    assert not Server.objects.exists()


def test_a_broken_outpost_shows_the_spawners_error(client, site_admin, two_outposts, home):
    # given the site admin's Outpost whose command does not exist on this host
    mine, _ = two_outposts
    mine.spawner_config = serve_config(home, cmd=["/no/such/jupyterhub-singleuser"])
    mine.save()
    # when they try a start on it
    page = try_start(client, mine)
    # then the page shows the spawner's own error, and what it logged before
    html = page.content.decode()
    assert 'data-outcome="failed"' in html
    assert page.context["result"].error == (
        "FileNotFoundError: [Errno 2] No such file or directory: '/no/such/jupyterhub-singleuser'"
    )
    assert "FileNotFoundError: [Errno 2] No such file or directory" in html
    assert "INFO Spawning /no/such/jupyterhub-singleuser" in html
    assert not Server.objects.exists()


def test_the_first_flavors_resources_are_tried_too(client, site_admin, two_outposts, home):
    # given a good Outpost whose first-listed flavor gives the server another command
    mine, _ = two_outposts
    mine.spawner_config = serve_config(home)
    mine.save()
    FlavorFactory(outpost=mine, name="small", weight=1)
    FlavorFactory(outpost=mine, name="broken", weight=9, resources={"cmd": ["/no/such/flavor"]})
    # when they try a start on it
    page = try_start(client, mine)
    # then the trial ran with that flavor, and says so
    assert page.context["result"].flavor == "broken"
    assert "and the resources of its flavor broken" in page.content.decode()
    assert "'/no/such/flavor'" in page.context["result"].error


def test_a_site_admin_tries_only_their_own_outpost(client, site_admin, two_outposts, home):
    # given a site admin of "mine" only
    _, theirs = two_outposts
    # when they post the action for the other Outpost
    page = try_start(client, theirs)
    # then nothing is tried (the admin's list has no such Outpost to act on)
    assert "result" not in page.context
    assert not Path(home, TRY_USER).exists()
