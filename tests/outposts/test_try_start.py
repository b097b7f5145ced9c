"""The Outpost admin's "Try a start": a real test start of the Outpost's spawner settings,
stopped right after, with the spawner's log on the page (outposts/trial.py).

The action queues the trial on the Outpost's queue; here the test runs the task's body itself,
as that queue's worker would (tests/e2e/test_try_start.py runs it on a real worker)."""

from datetime import timedelta
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from outposts import trial as trials
from outposts.models import OutpostTrial, Server
from tests.factories import FlavorFactory
from tests.support.processes import alive, wait_until
from tests.support.spawners import serve_config

pytestmark = pytest.mark.django_db

TRY_USER = "outpost-try"


def ask_for_trial(client, *outposts):
    return client.post(
        reverse("admin:outposts_outpost_changelist"),
        {"action": "try_start", "_selected_action": [outpost.pk for outpost in outposts]},
    )


def try_start(client, *outposts):
    """Ask for a trial in the admin, run it as the Outpost's worker would, open its page."""
    asked = ask_for_trial(client, *outposts)
    trial = OutpostTrial.objects.first()
    if trial is None:
        return client.get(asked.url) if asked.status_code == 302 else asked
    assert asked.status_code == 302, asked.content[:500]
    trials.outpost_trial_run(trial_id=trial.pk)
    return client.get(asked.url)


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
    assert "INFO Spawning " in page.context["result"]["log_lines"][0]
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
    assert page.context["result"]["error"] == (
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
    assert page.context["result"]["flavor"] == "broken"
    assert "and the resources of its flavor broken" in page.content.decode()
    assert "'/no/such/flavor'" in page.context["result"]["error"]


def test_a_site_admin_tries_only_their_own_outpost(client, site_admin, two_outposts, home):
    # given a site admin of "mine" only
    _, theirs = two_outposts
    # when they post the action for the other Outpost
    page = try_start(client, theirs)
    # then nothing is tried (the admin's list has no such Outpost to act on)
    assert "result" not in page.context
    assert not OutpostTrial.objects.exists()
    assert not Path(home, TRY_USER).exists()


def test_a_trial_runs_on_the_outposts_own_queue_and_the_page_waits_for_it(
    client, site_admin, two_outposts, django_capture_on_commit_callbacks
):
    # given the site admin's Outpost, whose queue no worker has served yet
    mine, _ = two_outposts
    # when they ask for a trial (the task is captured, not published)
    with django_capture_on_commit_callbacks() as queued:
        asked = ask_for_trial(client, mine)
    # then one task is queued for the Outpost's own workers, where its servers run
    assert [(c.args[0].name, c.args[1]["queue"]) for c in queued] == [
        ("outposts.tasks.outpost_trial_run_task", mine.celery_queue)
    ]
    # and the trial's page waits for it, refreshing, and says no worker was seen
    page = client.get(asked.url)
    html = page.content.decode()
    assert 'data-outcome="queued"' in html
    assert '<meta http-equiv="refresh" content="2">' in html
    assert "No worker for Outpost My cluster has been seen yet" in html


def test_a_trial_runs_once_and_another_outposts_trial_page_is_not_found(
    client, site_admin, two_outposts, home
):
    mine, theirs = two_outposts
    mine.spawner_config = serve_config(home, cmd=["/no/such/jupyterhub-singleuser"])
    mine.save()
    try_start(client, mine)
    trial = OutpostTrial.objects.get()
    finished_at = trial.finished_at
    # a redelivered task does nothing
    trials.outpost_trial_run(trial_id=trial.pk)
    trial.refresh_from_db()
    assert trial.finished_at == finished_at
    # another Outpost's trial is not this admin's to read
    other = OutpostTrial.objects.create(outpost=theirs)
    url = reverse("admin:outposts_outpost_trial", args=[theirs.pk, other.pk])
    assert client.get(url).status_code == 404
    # nor this trial under another Outpost's path
    url = reverse("admin:outposts_outpost_trial", args=[theirs.pk, trial.pk])
    assert client.get(url).status_code == 404


def test_a_trial_whose_worker_died_says_so_and_stops_refreshing(client, site_admin, two_outposts):
    # given a trial a worker started ten minutes ago, without a result since
    mine, _ = two_outposts
    trial = OutpostTrial.objects.create(
        outpost=mine, started_at=timezone.now() - timedelta(minutes=10)
    )
    # when the admin opens its page
    page = client.get(reverse("admin:outposts_outpost_trial", args=[mine.pk, trial.pk]))
    # then it says no result came back, and no longer refreshes
    html = page.content.decode()
    assert 'data-outcome="lost"' in html
    assert "http-equiv" not in html
