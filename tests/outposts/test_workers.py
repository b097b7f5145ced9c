"""Worker liveness (outposts/workers.py): what a start for an Outpost without a live worker
tells the user, the admin's "worker seen recently", and run_outpost_worker's arguments. The
stamps a real worker writes are checked end to end in tests/e2e/test_workers.py."""

from __future__ import annotations

import shlex
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from outposts.lifecycle.reconcile import outposts_reconcile
from outposts.models import WorkerHeartbeat
from outposts.services import StartRequest, server_start
from outposts.workers import worker_heartbeat_record
from tests.factories import OutpostFactory
from tests.support.html_tables import rows_with

pytestmark = pytest.mark.django_db

ENV = {"JUPYTERHUB_USER": "ada", "JUPYTERHUB_USER_ID": "7"}


def start_messages(hub, outpost) -> list[str]:
    server, _ = server_start(hub=hub, outpost=outpost, request=StartRequest(name="lab", env=ENV))
    return [event.message for event in server.events.order_by("pk")]


def stamp(queue: str, *, ago: timedelta, hostname: str = "w1@node") -> None:
    WorkerHeartbeat.objects.create(
        queue=queue, hostname=hostname, last_seen_at=timezone.now() - ago
    )


def test_a_start_for_an_outpost_whose_worker_was_never_seen_says_so(hub, outpost):
    # given no worker ever stamped the Outpost's queue
    # when a start is admitted
    messages = start_messages(hub, outpost)
    # then its progress says that it waits for a worker, naming the Outpost and its queue
    assert messages == [
        "Start request accepted.",
        "No worker for Outpost Local processes has been seen yet; "
        "the start waits in its queue (outpost.local).",
    ]


def test_a_start_for_an_outpost_whose_worker_went_quiet_says_for_how_long(hub, outpost, settings):
    # given the Outpost's worker stamped its queue 7 minutes ago, the limit being 2
    settings.WORKER_SEEN_WITHIN = 120
    stamp("outpost.local", ago=timedelta(minutes=7, seconds=10))
    # when a start is admitted
    messages = start_messages(hub, outpost)
    # then
    assert messages[1] == (
        "No worker for Outpost Local processes has been seen for 7 minutes; "
        "the start waits in its queue (outpost.local)."
    )


def test_a_start_for_an_outpost_with_a_live_worker_just_waits_for_it(hub, outpost, settings):
    # given a stamp within the limit, on the Outpost's queue (another queue's does not count)
    settings.WORKER_SEEN_WITHIN = 120
    stamp("outpost.local", ago=timedelta(seconds=30))
    # when
    messages = start_messages(hub, outpost)
    # then
    assert messages == ["Start request accepted."]


def test_a_worker_of_another_queue_does_not_count(hub, outpost, settings):
    settings.WORKER_SEEN_WITHIN = 120
    stamp("outpost.other", ago=timedelta(seconds=1))
    assert len(start_messages(hub, outpost)) == 2


def test_stamps_keep_one_row_per_queue_naming_the_last_worker():
    # when two workers stamp overlapping queues
    worker_heartbeat_record(queues=["celery", "outpost.a"], hostname="one@h")
    worker_heartbeat_record(queues=["outpost.a"], hostname="two@h")
    # then each queue has one row, by the worker that stamped it last
    assert dict(WorkerHeartbeat.objects.values_list("queue", "hostname")) == {
        "celery": "one@h",
        "outpost.a": "two@h",
    }


def test_the_outpost_list_and_page_show_whether_a_worker_was_seen_recently(
    client, superuser, settings, django_assert_max_num_queries
):
    # given three Outposts: a live worker, one gone quiet, one never seen (custom queue)
    settings.WORKER_SEEN_WITHIN = 120
    live = OutpostFactory(slug="live", name="Live")
    OutpostFactory(slug="quiet", name="Quiet")
    OutpostFactory(slug="never", name="Never", queue="hpc-never")
    stamp("outpost.live", ago=timedelta(seconds=5), hostname="live@login1")
    stamp("outpost.quiet", ago=timedelta(minutes=30), hostname="quiet@login2")
    stamp("outpost.never", ago=timedelta(seconds=1))  # not its queue
    # when the superuser opens the list
    page = client.get(reverse("admin:outposts_outpost_changelist"))
    # then each row says whether its queue's worker was seen, and when, and by whom
    assert page.status_code == 200
    shown = {
        cells["field-name"]: cells["field-worker_seen"]
        for _, cells in rows_with(page.content.decode(), table_id="result_list")
        if "field-name" in cells
    }
    assert shown["Live"].startswith("yes: seen ")
    assert shown["Live"].endswith(" s ago (live@login1)")
    assert shown["Quiet"] == "no: not seen for 30 min (last quiet@login2)"
    assert shown["Never"] == "no: never seen"
    # and the list reads the stamps in its own query, not one per Outpost
    for n in range(5):
        OutpostFactory(slug=f"more{n}")
    with django_assert_max_num_queries(len(page.context["cl"].result_list) + 12) as queries:
        client.get(reverse("admin:outposts_outpost_changelist"))
    assert sum("outposts_workerheartbeat" in q["sql"] for q in queries.captured_queries) == 1
    # and the change page shows it too
    change = client.get(reverse("admin:outposts_outpost_change", args=[live.pk]))
    assert b"Worker seen recently" in change.content
    assert b"(live@login1)" in change.content


def test_run_outpost_worker_refuses_an_unknown_outpost_naming_the_known_ones():
    OutpostFactory(slug="alpha")
    with pytest.raises(CommandError) as refused:
        call_command("run_outpost_worker", "nope")
    assert str(refused.value) == "There is no Outpost 'nope'; the Outposts are: alpha."


@pytest.mark.parametrize("concurrency", ["0", "-2", "many"])
def test_run_outpost_worker_refuses_a_concurrency_that_is_not_a_positive_number(concurrency):
    OutpostFactory(slug="alpha")
    with pytest.raises(CommandError, match="--concurrency"):
        call_command("run_outpost_worker", "alpha", "--concurrency", concurrency)


def test_run_outpost_worker_serves_the_outposts_queue_alone_with_runportals_options():
    # given an Outpost on a queue of its own name
    OutpostFactory(slug="hpc", queue="site-hpc")
    out = StringIO()
    # when
    call_command("run_outpost_worker", "hpc", "--concurrency", "3", "--print-command", stdout=out)
    # then the worker serves that queue only (not the default one), named after the Outpost
    argv = shlex.split(out.getvalue())
    assert argv[1:5] == ["-m", "celery", "-A", "portal"]
    assert argv[argv.index("--queues") + 1] == "site-hpc"
    assert argv[argv.index("--hostname") + 1] == "hpc@%h"
    assert argv[argv.index("--concurrency") + 1] == "3"
    assert {"--without-gossip", "--without-mingle"} <= set(argv)


def test_a_start_left_waiting_when_its_worker_went_away_is_told_once_by_beats_round(
    hub, outpost, settings
):
    # given a start admitted while the Outpost's worker was live, which then went quiet
    settings.WORKER_SEEN_WITHIN = 120
    stamp("outpost.local", ago=timedelta(seconds=30))
    server, _ = server_start(hub=hub, outpost=outpost, request=StartRequest(name="lab", env=ENV))
    WorkerHeartbeat.objects.update(last_seen_at=timezone.now() - timedelta(minutes=5))
    # when beat's reconciler round runs twice
    outposts_reconcile()
    outposts_reconcile()
    # then the start's progress says, once, that it waits for a worker
    assert [event.message for event in server.events.order_by("pk")] == [
        "Start request accepted.",
        "No worker for Outpost Local processes has been seen for 5 minutes; "
        "the start waits in its queue (outpost.local).",
    ]


def test_beats_round_leaves_starts_alone_while_their_worker_is_live(hub, outpost, settings):
    settings.WORKER_SEEN_WITHIN = 120
    stamp("outpost.local", ago=timedelta(seconds=30))
    server, _ = server_start(hub=hub, outpost=outpost, request=StartRequest(name="lab", env=ENV))
    outposts_reconcile()
    assert [event.message for event in server.events.all()] == ["Start request accepted."]
