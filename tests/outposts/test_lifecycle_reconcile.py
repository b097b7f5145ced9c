"""The reconciler round as the Hub and the Outpost's admins see it: its lease, its batches,
lost stops queued again, polls that hang, fail or race a stop, and other Outposts left alone.

The ordinary paths (exits, runtimes, start timeouts, unknown) are in test_reconciler.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from django.db.models import F
from django.utils import timezone
from jupyterhub.spawner import SimpleLocalProcessSpawner
from traitlets import Float

from outposts import selectors, services, tasks
from outposts.lifecycle import reconcile
from outposts.models import Outpost, Server
from tests.factories import OutpostFactory, ServerFactory
from tests.support.lifecycle import hub_env
from tests.support.processes import alive
from tests.support.spawners import serve_config

BASE = "/outposts/local/services"
UNREACHABLE = "tests.support.spawners.UnreachableSpawner"
LOCAL = "jupyterhub.spawner.SimpleLocalProcessSpawner"
LOST_CONTACT = "The Outpost lost contact with the server's system and ended it."


class SlowPollSpawner(SimpleLocalProcessSpawner):
    """A system that answers a poll only after ``poll_delay`` seconds (an overloaded batch
    scheduler); configured by dotted path, like the stand-ins of tests/support/spawners.py."""

    poll_delay = Float(5.0, help="Seconds poll() takes before it answers.").tag(config=True)

    async def poll(self):
        await asyncio.sleep(self.poll_delay)
        return None


def long_ago() -> datetime:
    return timezone.now() - timedelta(hours=1)


@pytest.fixture
def sent(monkeypatch, django_capture_on_commit_callbacks):
    """Run ``round_()`` and return what it queued, as (task name, args, queue, expires).

    A test's transaction never commits, so the on-commit callbacks are run by hand and every
    broker send of the lifecycle and Hub tasks is recorded instead.
    """
    records: list[tuple[str, tuple, str | None, float | None]] = []
    for name in (
        "server_stop_run_task",
        "outpost_reconcile_task",
        "hub_event_send_task",
        "hub_flavors_send_task",
        "hub_address_send_task",
    ):
        task = getattr(tasks, name)._get_current_object()

        def record(args=None, kwargs=None, queue=None, expires=None, _name=name, **options):
            records.append((_name, tuple(args or ()), queue, expires))

        monkeypatch.setattr(task, "apply_async", record)

    def run(round_: Callable[[], None]) -> list[tuple[str, tuple, str | None, float | None]]:
        records.clear()
        with django_capture_on_commit_callbacks(execute=True):
            round_()
        return list(records)

    return run


def stops(records) -> list[int]:
    """The servers whose stop task was queued, in order."""
    return [args[0] for name, args, _, _ in records if name == "server_stop_run_task"]


def polled_server(outpost: Outpost, hub, name: str = "lab", **kwargs) -> Server:
    """A running server of ``outpost`` that was never polled (so the next round polls it)."""
    return ServerFactory(
        hub=hub,
        outpost=outpost,
        name=name,
        start_id="s1",
        user_name="olga",
        env=hub_env("olga", name),
        spawner_state={"pid": 0},
        **kwargs,
    )


def make_unreachable(outpost: Outpost, home) -> None:
    """The Outpost's system cannot be asked: every poll fails (its servers become unknown)."""
    outpost.spawner_class = UNREACHABLE
    outpost.spawner_config = serve_config(home)
    outpost.save()


def poll_due(server: Server) -> None:
    """Make the server due for its next poll, as if the poll interval had passed."""
    Server.objects.filter(pk=server.pk).update(
        last_poll_at=timezone.now() - server.outpost.poll_interval - timedelta(seconds=1)
    )


# --- Beat and the round's lease ------------------------------------------------------------


def test_beat_queues_one_round_per_outpost_on_its_queue_expiring_after_the_interval(
    db, settings, sent
):
    # given
    settings.RECONCILE_INTERVAL = 45.0
    first = OutpostFactory(slug="first")
    second = OutpostFactory(slug="second", queue="hpc-workers")
    # when
    queued = sent(tasks.outposts_reconcile_task)
    # then a round nobody runs within the interval expires instead of piling up
    assert sorted(queued) == [
        ("outpost_reconcile_task", (first.pk,), "outpost.first", 45.0),
        ("outpost_reconcile_task", (second.pk,), "hpc-workers", 45.0),
    ]


def test_a_round_delivered_while_a_round_runs_does_nothing_and_the_lease_is_freed(
    outpost, monkeypatch
):
    # given a round that, while it runs, sees a second round of the same Outpost delivered
    real_reconcile = reconcile._reconcile
    rounds: list[int] = []
    leases = []

    def reconcile_and_deliver_again(the_outpost: Outpost) -> None:
        rounds.append(the_outpost.pk)
        leases.append(Outpost.objects.get(pk=the_outpost.pk).reconcile_lease_until)
        if len(rounds) == 1:
            tasks.outpost_reconcile_task(the_outpost.pk)
        real_reconcile(the_outpost)

    monkeypatch.setattr(reconcile, "_reconcile", reconcile_and_deliver_again)
    before = timezone.now()
    # when
    tasks.outpost_reconcile_task(outpost.pk)
    # then only the first round ran, holding the Outpost for the round's lease
    assert rounds == [outpost.pk]
    assert before + reconcile.RECONCILE_LEASE <= leases[0]
    assert leases[0] <= timezone.now() + reconcile.RECONCILE_LEASE
    # and the lease is free for the next round once it ended
    assert Outpost.objects.get(pk=outpost.pk).reconcile_lease_until is None


def test_a_round_that_outlived_its_lease_leaves_the_next_rounds_lease_alone(outpost, monkeypatch):
    # given a round so slow that its lease ran out and the next round took the Outpost
    real_reconcile = reconcile._reconcile
    next_rounds_lease = timezone.now() + timedelta(minutes=4)

    def slow_reconcile(the_outpost: Outpost) -> None:
        real_reconcile(the_outpost)
        Outpost.objects.filter(pk=the_outpost.pk).update(reconcile_lease_until=next_rounds_lease)

    monkeypatch.setattr(reconcile, "_reconcile", slow_reconcile)
    # when the slow round ends
    tasks.outpost_reconcile_task(outpost.pk)
    # then the next round still holds the Outpost
    assert Outpost.objects.get(pk=outpost.pk).reconcile_lease_until == next_rounds_lease


def test_a_round_frees_only_its_own_outposts_lease(outpost, monkeypatch):
    # given a round of another Outpost that took its lease at the very same instant
    other = OutpostFactory(slug="other")
    real_reconcile = reconcile._reconcile

    def reconcile_beside_another_round(the_outpost: Outpost) -> None:
        ours = Outpost.objects.get(pk=the_outpost.pk).reconcile_lease_until
        Outpost.objects.filter(pk=other.pk).update(reconcile_lease_until=ours)
        real_reconcile(the_outpost)

    monkeypatch.setattr(reconcile, "_reconcile", reconcile_beside_another_round)
    # when
    tasks.outpost_reconcile_task(outpost.pk)
    # then
    assert Outpost.objects.get(pk=outpost.pk).reconcile_lease_until is None
    assert Outpost.objects.get(pk=other.pk).reconcile_lease_until is not None


# --- Batches -------------------------------------------------------------------------------


def test_a_round_acts_on_a_batch_of_each_kind_and_the_next_round_on_the_rest(
    outpost, hub, home, settings, sent
):
    # given a batch of one, and two servers of every kind a round acts on (polls aside: a
    # round polls every due server, a batch at a time)
    settings.RECONCILE_BATCH_SIZE = 1
    make_unreachable(outpost, home)
    timed_out = [
        ServerFactory(hub=hub, outpost=outpost, status=Server.Status.REQUESTED) for _ in range(2)
    ]
    Server.objects.filter(pk__in=[s.pk for s in timed_out]).update(created_at=long_ago())
    # (two stops asked for in one go, at the same instant, and lost)
    asked = long_ago()
    lost = [
        ServerFactory(
            hub=hub, outpost=outpost, status=Server.Status.STOPPING, stop_requested_at=asked
        )
        for _ in range(2)
    ]
    past_runtime = [
        ServerFactory(
            hub=hub,
            outpost=outpost,
            end_at=timezone.now() - timedelta(minutes=1),
            last_poll_at=timezone.now(),
        )
        for _ in range(2)
    ]
    unreachable = [polled_server(outpost, hub, name=f"lab{i}") for i in range(2)]

    def statuses(servers: list[Server]) -> list[str]:
        return sorted(Server.objects.get(pk=s.pk).status for s in servers)

    # when
    first = sent(lambda: tasks.outpost_reconcile_task(outpost.pk))
    # then one of each kind was acted on
    assert statuses(timed_out) == sorted([Server.Status.FAILED, Server.Status.REQUESTED])
    assert statuses(past_runtime) == sorted([Server.Status.STOPPING, Server.Status.RUNNING])
    assert statuses(unreachable) == [Server.Status.UNKNOWN] * 2
    lost_requeued = [pk for pk in stops(first) if pk in {s.pk for s in lost}]
    assert len(lost_requeued) == 1
    # and when the next round runs, the rest
    second = sent(lambda: tasks.outpost_reconcile_task(outpost.pk))
    assert statuses(timed_out) == [Server.Status.FAILED] * 2
    assert statuses(past_runtime) == [Server.Status.STOPPING] * 2
    assert statuses(unreachable) == [Server.Status.UNKNOWN] * 2
    assert sorted(lost_requeued + [pk for pk in stops(second) if pk in {s.pk for s in lost}]) == [
        s.pk for s in sorted(lost, key=lambda s: s.pk)
    ]


def test_a_round_polls_every_due_server_a_batch_at_a_time(outpost, hub, home, settings, sent):
    # given a batch of two, five servers due for a poll, and two polled just now
    settings.RECONCILE_BATCH_SIZE = 2
    make_unreachable(outpost, home)
    due = [polled_server(outpost, hub, name=f"lab{i}") for i in range(5)]
    fresh = [
        polled_server(outpost, hub, name=f"new{i}", last_poll_at=timezone.now()) for i in range(2)
    ]
    # when one round runs
    sent(lambda: tasks.outpost_reconcile_task(outpost.pk))
    # then every due server was polled (found unknown), across three batches, and the fresh
    # ones not at all
    polls = {s.pk: Server.objects.get(pk=s.pk) for s in due + fresh}
    assert [polls[s.pk].status for s in due] == [Server.Status.UNKNOWN] * 5
    assert [polls[s.pk].status for s in fresh] == [Server.Status.RUNNING] * 2


def test_a_round_polls_each_server_once_even_when_it_is_due_again_meanwhile(
    outpost, hub, home, settings, sent, monkeypatch
):
    # given a poll interval of zero (a polled server is due again at once) and a batch of two
    settings.RECONCILE_BATCH_SIZE = 2
    make_unreachable(outpost, home)
    outpost.poll_interval = timedelta(0)
    outpost.save()
    due = [polled_server(outpost, hub, name=f"lab{i}") for i in range(3)]
    polled: list[int] = []
    poll_servers = reconcile._poll_servers

    def recording(servers):
        polled.extend(server.pk for server in servers)
        poll_servers(servers)

    monkeypatch.setattr(reconcile, "_poll_servers", recording)
    # when one round runs, each server is polled exactly once
    sent(lambda: tasks.outpost_reconcile_task(outpost.pk))
    assert sorted(polled) == sorted(s.pk for s in due)


def test_a_round_starts_no_batch_after_its_interval(outpost, hub, home, settings, sent):
    # given a round with no time (an interval of zero) and servers due for a poll
    settings.RECONCILE_INTERVAL = 0
    make_unreachable(outpost, home)
    due = polled_server(outpost, hub)
    # when it runs, it leaves the polls to the next round
    sent(lambda: tasks.outpost_reconcile_task(outpost.pk))
    assert Server.objects.get(pk=due.pk).status == Server.Status.RUNNING


# --- Lost stops ----------------------------------------------------------------------------


def test_a_lost_stop_is_queued_again_after_every_wait_and_the_row_says_when(outpost, hub, sent):
    # given a stop asked for an hour ago whose task was lost
    server = ServerFactory(
        hub=hub, outpost=outpost, status=Server.Status.STOPPING, stop_requested_at=long_ago()
    )
    Server.objects.filter(pk=server.pk).update(updated_at=long_ago())
    before = timezone.now()
    # when
    first = sent(lambda: tasks.outpost_reconcile_task(outpost.pk))
    # then it is queued again, on the Outpost's queue, and the row shows the new request
    assert first == [("server_stop_run_task", (server.pk,), outpost.celery_queue, None)]
    server.refresh_from_db()
    assert server.status == Server.Status.STOPPING
    assert before <= server.stop_requested_at <= timezone.now()
    assert before <= server.updated_at
    # and when that task is lost too, it is queued again once the wait has passed once more
    Server.objects.filter(pk=server.pk).update(
        stop_requested_at=F("stop_requested_at") - reconcile.STOP_TASK_LOST_AFTER
    )
    again = sent(lambda: tasks.outpost_reconcile_task(outpost.pk))
    assert stops(again) == [server.pk]


def test_a_lost_stop_whose_task_turns_up_during_the_round_is_not_queued_again(
    running, monkeypatch, sent
):
    # given a running server whose stop was asked for long ago, its task late, not lost
    server = running()
    pid = server.spawner_state["pid"]
    asked = long_ago()
    Server.objects.filter(pk=server.pk).update(
        status=Server.Status.STOPPING, stop_requested_at=asked
    )
    real_stops_lost = selectors.stops_lost

    def stops_lost_then_the_late_task_runs(**kwargs):
        found = real_stops_lost(**kwargs)
        tasks.server_stop_run_task(server.pk)
        return found

    monkeypatch.setattr(selectors, "stops_lost", stops_lost_then_the_late_task_runs)
    # when
    queued = sent(lambda: tasks.outpost_reconcile_task(server.outpost_id))
    # then the server stopped, and no second stop was queued for it
    assert stops(queued) == []
    server.refresh_from_db()
    assert (server.status, server.exit_code, server.stop_requested_at) == (
        Server.Status.STOPPED,
        0,
        asked,
    )
    assert not alive(pid)


def test_two_rounds_overlapping_after_a_lease_ran_out_queue_a_lost_stop_once(
    outpost, hub, monkeypatch, sent
):
    # given a lost stop, and a round so slow that the next round takes the Outpost and
    # handles the lost stop while the slow round still holds its (stale) list
    server = ServerFactory(
        hub=hub, outpost=outpost, status=Server.Status.STOPPING, stop_requested_at=long_ago()
    )
    real_stops_lost = selectors.stops_lost
    overlapping: list[bool] = []

    def stops_lost_then_the_next_round_runs(**kwargs):
        found = real_stops_lost(**kwargs)
        if not overlapping:
            overlapping.append(True)
            Outpost.objects.filter(pk=outpost.pk).update(
                reconcile_lease_until=timezone.now() - timedelta(seconds=1)
            )
            tasks.outpost_reconcile_task(outpost.pk)
        return found

    monkeypatch.setattr(selectors, "stops_lost", stops_lost_then_the_next_round_runs)
    # when
    queued = sent(lambda: tasks.outpost_reconcile_task(outpost.pk))
    # then
    assert stops(queued) == [server.pk]


# --- Polls ---------------------------------------------------------------------------------


def test_a_poll_that_finds_the_server_running_records_it_on_that_server_only(running, hub, sent):
    # given a running server due for its poll, and an unknown server of another Outpost
    server = running()
    poll_due(server)
    Server.objects.filter(pk=server.pk).update(updated_at=long_ago())
    elsewhere = OutpostFactory(slug="elsewhere")
    unknown_since = timezone.now() - timedelta(minutes=5)
    other = ServerFactory(
        hub=hub,
        outpost=elsewhere,
        status=Server.Status.UNKNOWN,
        unknown_since=unknown_since,
        last_poll_at=unknown_since,
    )
    before = timezone.now()
    # when
    sent(lambda: tasks.outpost_reconcile_task(server.outpost_id))
    # then
    server.refresh_from_db()
    assert server.status == Server.Status.RUNNING
    assert before <= server.last_poll_at
    assert before <= server.updated_at
    other.refresh_from_db()
    assert (other.status, other.unknown_since, other.last_poll_at) == (
        Server.Status.UNKNOWN,
        unknown_since,
        unknown_since,
    )


def test_a_server_that_cannot_be_asked_is_polled_again_only_after_the_poll_interval(
    outpost, hub, home
):
    # given
    make_unreachable(outpost, home)
    server = polled_server(outpost, hub)
    before = timezone.now()
    # when
    tasks.outpost_reconcile_task(outpost.pk)
    # then
    server.refresh_from_db()
    assert server.status == Server.Status.UNKNOWN
    polled_at = server.last_poll_at
    assert polled_at is not None and before <= polled_at
    # and a round within the poll interval leaves it alone
    tasks.outpost_reconcile_task(outpost.pk)
    assert Server.objects.get(pk=server.pk).last_poll_at == polled_at


def test_a_poll_that_does_not_answer_in_time_makes_the_server_unknown(outpost, hub, home, settings):
    # given a system that answers a poll after 5 s, and polls that may take half a second
    settings.SPAWNER_POLL_TIMEOUT = 0.5
    outpost.spawner_class = f"{__name__}.SlowPollSpawner"
    outpost.spawner_config = serve_config(home, poll_delay=5.0)
    outpost.save()
    server = polled_server(outpost, hub)
    # when
    tasks.outpost_reconcile_task(outpost.pk)
    # then
    server.refresh_from_db()
    assert server.status == Server.Status.UNKNOWN
    assert server.unknown_since is not None


def test_a_server_whose_spawner_cannot_be_built_is_unknown_not_running(outpost, hub, home):
    # given an Outpost whose spawner class was uninstalled since the server started
    outpost.spawner_class = "tests.support.no_such_module.GoneSpawner"
    outpost.spawner_config = serve_config(home)
    outpost.save()
    server = polled_server(outpost, hub)
    # when
    tasks.outpost_reconcile_task(outpost.pk)
    # then
    server.refresh_from_db()
    assert server.status == Server.Status.UNKNOWN
    assert server.unknown_since is not None


def test_an_outpost_without_grace_ends_a_server_at_its_first_failed_poll(
    outpost, hub, home, hub_client
):
    # given
    outpost.spawner_class = UNREACHABLE
    outpost.spawner_config = serve_config(home)
    outpost.unknown_grace = timedelta(0)
    outpost.save()
    server = polled_server(outpost, hub)
    # when
    tasks.outpost_reconcile_task(outpost.pk)
    # then the Hub and its user learn why
    server.refresh_from_db()
    assert (server.status, server.exit_code, server.error) == (
        Server.Status.FAILED,
        1,
        LOST_CONTACT,
    )
    last = server.events.last()
    assert (last.message, last.failed) == (LOST_CONTACT, True)
    assert hub_client.get(f"{BASE}/lab/s1").json()["status"] == 1


@pytest.mark.parametrize("system", ["answers", "does not answer"])
def test_a_server_stopped_while_its_poll_ran_stays_stopped(
    system, running, hub_client, monkeypatch
):
    # given a running server due for its poll
    server = running()
    pid = server.spawner_state["pid"]
    poll_due(server)
    if system == "does not answer":
        Outpost.objects.filter(pk=server.outpost_id).update(spawner_class=UNREACHABLE)
    real_run_sync = reconcile.run_sync

    def poll_then_the_hub_stops_it(*args, **kwargs):
        results = real_run_sync(*args, **kwargs)
        # the system answers again, and the Hub's stop runs to its end before the round
        # records the poll
        Outpost.objects.filter(pk=server.outpost_id).update(spawner_class=LOCAL)
        services.server_stop(server=Server.objects.get(pk=server.pk))
        tasks.server_stop_run_task(server.pk)
        return results

    monkeypatch.setattr(reconcile, "run_sync", poll_then_the_hub_stops_it)
    # when
    tasks.outpost_reconcile_task(server.outpost_id)
    # then
    server.refresh_from_db()
    assert (server.status, server.exit_code, server.unknown_since) == (
        Server.Status.STOPPED,
        0,
        None,
    )
    assert hub_client.get(f"{BASE}/lab/s1").json()["status"] == 0
    assert not alive(pid)
