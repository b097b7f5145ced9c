"""The reconciler against real local servers: exits, runtimes, start timeouts, unknown."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.utils import timezone

from outposts import tasks
from outposts.models import Outpost, Server
from tests.factories import ServerFactory
from tests.support.lifecycle import hub_env
from tests.support.processes import alive, json_if_up, wait_until
from tests.support.spawners import serve_config

BASE = "/outposts/local/services"


def poll_due(server: Server) -> None:
    """Make the server due for its next poll, as if the poll interval had passed."""
    Server.objects.filter(pk=server.pk).update(
        last_poll_at=timezone.now() - server.outpost.poll_interval - timedelta(seconds=1)
    )


def test_a_server_whose_process_exits_is_reported_with_its_exit_status(running, hub_client):
    # given
    server = running()
    wait_until(lambda: json_if_up(f"http://{server.address}/user/olga/lab/exit-7"))
    wait_until(lambda: not alive(server.spawner_state["pid"]))
    poll_due(server)
    assert hub_client.get(f"{BASE}/lab/s1").json()["status"] is None
    # when
    tasks.outpost_reconcile_task(server.outpost_id)
    # then
    server.refresh_from_db()
    assert (server.status, server.exit_code) == (Server.Status.STOPPED, 7)
    assert hub_client.get(f"{BASE}/lab/s1").json()["status"] == 7


def test_a_running_server_stays_running_and_its_poll_time_moves(running):
    # given
    server = running()
    poll_due(server)
    before = Server.objects.get(pk=server.pk).last_poll_at
    # when
    tasks.outpost_reconcile_task(server.outpost_id)
    # then
    server.refresh_from_db()
    assert server.status == Server.Status.RUNNING
    assert server.last_poll_at > before


@pytest.fixture
def queued_stops(monkeypatch, django_capture_on_commit_callbacks):
    """Run ``round()`` and return the stop tasks it queued, as (args, queue).

    A test's transaction never commits, so the on-commit callbacks are run by hand and the
    broker send is recorded instead; the test then runs the task itself.
    """
    task = tasks.server_stop_run_task._get_current_object()

    def run(round_: Callable[[], None]) -> list[tuple[tuple, str]]:
        sent: list[tuple[tuple, str]] = []
        monkeypatch.setattr(
            task, "apply_async", lambda args, queue, **kw: sent.append((tuple(args), queue))
        )
        with django_capture_on_commit_callbacks(execute=True):
            round_()
        return sent

    return run


def test_a_server_past_its_runtime_is_stopped(running, hub_client, queued_stops):
    # given
    server = running()
    pid = server.spawner_state["pid"]
    Server.objects.filter(pk=server.pk).update(end_at=timezone.now() - timedelta(seconds=1))
    # when
    sent = queued_stops(lambda: tasks.outpost_reconcile_task(server.outpost_id))
    # then the round asked for the stop and queued it on the Outpost's queue
    server.refresh_from_db()
    assert server.status == Server.Status.STOPPING
    assert server.stop_requested_at is not None
    assert sent == [((server.pk,), server.outpost.celery_queue)]
    # and when the stop task runs
    tasks.server_stop_run_task(*sent[0][0])
    # then
    server.refresh_from_db()
    assert (server.status, server.exit_code) == (Server.Status.STOPPED, 0)
    assert not alive(pid)
    assert hub_client.get(f"{BASE}/lab/s1").json()["status"] == 0


def test_a_round_does_nothing_while_another_round_of_the_outpost_runs(running, queued_stops):
    # given a server past its runtime, and another round holding the Outpost's lease
    server = running()
    Server.objects.filter(pk=server.pk).update(end_at=timezone.now() - timedelta(seconds=1))
    Outpost.objects.filter(pk=server.outpost_id).update(
        reconcile_lease_until=timezone.now() + timedelta(minutes=1)
    )
    # when
    sent = queued_stops(lambda: tasks.outpost_reconcile_task(server.outpost_id))
    # then
    assert sent == []
    assert Server.objects.get(pk=server.pk).status == Server.Status.RUNNING
    # and once that lease ran out (its round died), a round acts and releases the lease
    Outpost.objects.filter(pk=server.outpost_id).update(
        reconcile_lease_until=timezone.now() - timedelta(seconds=1)
    )
    sent = queued_stops(lambda: tasks.outpost_reconcile_task(server.outpost_id))
    assert sent == [((server.pk,), server.outpost.celery_queue)]
    assert Outpost.objects.get(pk=server.outpost_id).reconcile_lease_until is None


def test_a_start_past_its_timeout_whose_task_is_alive_is_left_to_it(outpost, hub):
    # given a start past the timeout whose task still renews its lease (it is cancelling)
    # (a start whose worker died is cleaned up: tests/e2e/test_recovery.py)
    long_ago = timezone.now() - outpost.start_timeout - timedelta(minutes=5)
    server = ServerFactory(
        hub=hub,
        outpost=outpost,
        status=Server.Status.PENDING,
        started_at=long_ago,
        start_lease_until=timezone.now() + timedelta(minutes=1),
    )
    # when
    tasks.outpost_reconcile_task(outpost.pk)
    # then
    assert Server.objects.get(pk=server.pk).status == Server.Status.PENDING


def test_a_request_no_worker_ever_took_fails_after_the_start_timeout(outpost, hub):
    # given
    server = ServerFactory(hub=hub, outpost=outpost, status=Server.Status.REQUESTED)
    Server.objects.filter(pk=server.pk).update(created_at=timezone.now() - timedelta(hours=1))
    # when
    tasks.outpost_reconcile_task(outpost.pk)
    # then
    assert Server.objects.get(pk=server.pk).status == Server.Status.FAILED


@pytest.fixture
def unreachable(outpost, hub, home):
    outpost.spawner_class = "tests.support.spawners.UnreachableSpawner"
    outpost.spawner_config = serve_config(home)
    outpost.unknown_grace = timedelta(minutes=15)
    outpost.save()
    return ServerFactory(
        hub=hub,
        outpost=outpost,
        name="lab",
        start_id="s1",
        user_name="olga",
        env=hub_env("olga", "lab"),
        spawner_state={"pid": 0},
    )


def test_a_server_that_cannot_be_asked_is_unknown_not_dead(unreachable, hub_client):
    # when
    tasks.outpost_reconcile_task(unreachable.outpost_id)
    # then
    unreachable.refresh_from_db()
    assert unreachable.status == Server.Status.UNKNOWN
    assert unreachable.unknown_since is not None
    assert hub_client.get(f"{BASE}/lab/s1").json()["status"] is None


def test_an_unknown_server_comes_back_when_its_system_answers(unreachable, home):
    # given
    tasks.outpost_reconcile_task(unreachable.outpost_id)
    (home / "olga").mkdir(parents=True)
    (home / "olga" / "reachable").touch()
    poll_due(unreachable)
    # when
    tasks.outpost_reconcile_task(unreachable.outpost_id)
    # then
    unreachable.refresh_from_db()
    assert (unreachable.status, unreachable.unknown_since) == (Server.Status.RUNNING, None)


def test_an_unknown_server_ends_only_after_the_grace(unreachable, hub_client):
    # given unknown for a while, but within the grace
    tasks.outpost_reconcile_task(unreachable.outpost_id)
    Server.objects.filter(pk=unreachable.pk).update(
        unknown_since=timezone.now() - timedelta(minutes=14)
    )
    poll_due(unreachable)
    tasks.outpost_reconcile_task(unreachable.outpost_id)
    assert Server.objects.get(pk=unreachable.pk).status == Server.Status.UNKNOWN
    # when the grace has passed
    Server.objects.filter(pk=unreachable.pk).update(
        unknown_since=timezone.now() - timedelta(minutes=16)
    )
    poll_due(unreachable)
    tasks.outpost_reconcile_task(unreachable.outpost_id)
    # then
    unreachable.refresh_from_db()
    assert unreachable.status == Server.Status.FAILED
    assert "lost contact" in unreachable.error
    assert hub_client.get(f"{BASE}/lab/s1").json()["status"] == 1


def test_a_stop_whose_task_was_lost_is_queued_again_once(running, queued_stops):
    # given a running server marked stopping long ago, its stop task lost
    server = running()
    pid = server.spawner_state["pid"]
    Server.objects.filter(pk=server.pk).update(
        status=Server.Status.STOPPING, stop_requested_at=timezone.now() - timedelta(hours=1)
    )
    # when two rounds run
    first = queued_stops(lambda: tasks.outpost_reconcile_task(server.outpost_id))
    second = queued_stops(lambda: tasks.outpost_reconcile_task(server.outpost_id))
    # then the stop was queued again once, not every round
    assert first == [((server.pk,), server.outpost.celery_queue)]
    assert second == []
    # and when it runs, the process is gone and the server stopped
    tasks.server_stop_run_task(*first[0][0])
    server.refresh_from_db()
    assert server.status == Server.Status.STOPPED
    assert not alive(pid)


def test_a_round_records_every_server_it_found_running_and_leaves_ended_ones(outpost, hub):
    # given an Outpost whose systems answer "running" at once, three servers due for a poll,
    # one of them unknown, and one that ended before the round
    outpost.spawner_class = "tests.support.spawners.InstantSpawner"
    outpost.save()
    due = timezone.now() - outpost.poll_interval - timedelta(seconds=1)
    running = [
        ServerFactory(hub=hub, outpost=outpost, flavor=None, last_poll_at=due) for _ in range(2)
    ]
    unknown = ServerFactory(
        hub=hub,
        outpost=outpost,
        flavor=None,
        status=Server.Status.UNKNOWN,
        unknown_since=due,
        last_poll_at=due,
    )
    ended = ServerFactory(
        hub=hub, outpost=outpost, flavor=None, status=Server.Status.STOPPED, last_poll_at=due
    )
    # when
    tasks.outpost_reconcile_task(outpost.pk)
    # then every one polled is running with a new poll time, the unknown one again
    for server in [*running, unknown]:
        server.refresh_from_db()
        assert (server.status, server.unknown_since) == (Server.Status.RUNNING, None)
        assert server.last_poll_at > due
    ended.refresh_from_db()
    assert (ended.status, ended.last_poll_at) == (Server.Status.STOPPED, due)
