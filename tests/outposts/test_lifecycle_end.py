"""How servers end (outposts/lifecycle/end.py), as a user, a Hub and an Outpost's admins see it:
the server's row and poll status, the progress events and flavor updates the Hub receives, the
tasks queued, the processes really stopped on the Outpost, and the errors logged for admins.

Servers run as real local processes; the Hub is tests.support.hub.FakeHub over real HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from jupyterhub.spawner import SimpleLocalProcessSpawner

from outposts import tasks
from outposts.errors import SpawnerFailed
from outposts.lifecycle import end, start
from outposts.models import Server
from outposts.runner.spawner import SpawnerRunner
from tests.factories import FlavorFactory, OutpostFactory, ServerFactory
from tests.support.hub import FakeHub
from tests.support.processes import alive, wait_until
from tests.support.spawners import serve_config

#: Hub call-backs, run at once here as a worker of the default queue would run them.
HUB_TASKS = ("hub_event_send_task", "hub_flavors_send_task", "hub_address_send_task")
#: Lifecycle tasks, only recorded: a test runs them itself when it needs to.
LIFECYCLE_TASKS = ("server_start_run_task", "server_stop_run_task", "outpost_reconcile_task")

#: A server process that records the signals it gets in ./signals (its cwd is its home) and
#: ends on SIGTERM only; ./ready says its handlers are in place.
SIGNALS_SCRIPT = r"""
import pathlib, signal, sys, time

def record(number, frame):
    with open("signals", "a") as log:
        log.write(signal.Signals(number).name + "\n")
    if number == signal.SIGTERM:
        sys.exit(0)

signal.signal(signal.SIGINT, record)
signal.signal(signal.SIGTERM, record)
pathlib.Path("ready").touch()
while True:
    time.sleep(1)
"""


class RefusingStopSpawner(SimpleLocalProcessSpawner):
    """A system that refuses to stop servers while ``<home>/refuse-stops`` exists (a batch
    system that is down), and stops them again once it is gone."""

    async def stop(self, now=False):
        if Path(self.home_dir, "refuse-stops").exists():
            raise RuntimeError("the batch system refuses the stop")
        return await super().stop(now=now)


REFUSING = "tests.outposts.test_lifecycle_end.RefusingStopSpawner"


class Worker:
    """Runs lifecycle calls as a Celery worker does, and what they queue once they commit.

    A test's transaction never commits, so the on-commit sends are run by hand. Hub
    call-backs are then run at once against the fake Hub; lifecycle tasks are only recorded
    in ``queued`` as (task name, args, queue).
    """

    def __init__(self, monkeypatch, capture_on_commit) -> None:
        self.queued: list[tuple[str, tuple, str | None]] = []
        self._capture = capture_on_commit
        for name in (*HUB_TASKS, *LIFECYCLE_TASKS):
            self._record(monkeypatch, name, deliver=name in HUB_TASKS)

    def _record(self, monkeypatch, name: str, *, deliver: bool) -> None:
        task = getattr(tasks, name)._get_current_object()

        def apply_async(args=None, kwargs=None, **options):
            self.queued.append((name, tuple(args or ()), options.get("queue")))
            if deliver:
                task(*(args or ()), **(kwargs or {}))

        monkeypatch.setattr(task, "apply_async", apply_async)

    def run(self, call: Callable[[], Any]) -> Any:
        with self._capture(execute=True):
            return call()

    def names(self) -> list[str]:
        return [name for name, _, _ in self.queued]


@pytest.fixture
def worker(monkeypatch, django_capture_on_commit_callbacks) -> Worker:
    return Worker(monkeypatch, django_capture_on_commit_callbacks)


def new_server(
    fake_hub: FakeHub, home: Path, *, spawner_class: str | None = None, cmd=None, **fields
) -> Server:
    """A server of user olga on an Outpost of its own that runs real local processes, its
    call-back URLs pointing at ``fake_hub``."""
    config = serve_config(home, **({"cmd": cmd} if cmd else {}))
    outpost = OutpostFactory(
        spawner_class=spawner_class or "jupyterhub.spawner.SimpleLocalProcessSpawner",
        spawner_config=config,
    )
    fields.setdefault("flavor", FlavorFactory(outpost=outpost, name="small"))
    return ServerFactory(
        outpost=outpost, name="", user_name="olga", env=fake_hub.env("olga"), **fields
    )


def spawn(server: Server) -> dict[str, Any]:
    """Start the server's spawner for real, as a start attempt would; its saved state."""
    runner = SpawnerRunner.for_server(server)
    asyncio.run(runner.start())
    return runner.get_state()


def with_process(server: Server, killer: list[int], **fields) -> tuple[Server, int]:
    """The server with a real process, its state saved on the row, and ``fields`` set."""
    state = spawn(server)
    killer.append(state["pid"])
    Server.objects.filter(pk=server.pk).update(spawner_state=state, **fields)
    server.refresh_from_db()
    return server, state["pid"]


def event_posts(fake_hub: FakeHub) -> list[dict]:
    return [call.body for call in fake_hub.posts("/users/progress/events/")]


def flavor_updates(fake_hub: FakeHub) -> list[dict]:
    return [call.body for call in fake_hub.posts("/outpostflavors/")]


def admin_errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]


# --- Ending a server: stopped or failed --------------------------------------------------


def test_a_failed_start_shows_its_error_and_a_hub_waiting_for_call_backs_is_told(
    db, fake_hub, home, worker
):
    # given a start under way whose Hub got an early answer (it waits for call-backs)
    server = new_server(
        fake_hub,
        home,
        status=Server.Status.PENDING,
        address_via_callback=True,
        spawner_state={"pid": 4242},
        start_lease_until=timezone.now() + timedelta(minutes=2),
    )
    before = timezone.now()
    # when
    ended = worker.run(
        lambda: end.server_mark_failed(server_id=server.pk, error="The image does not exist.")
    )
    # then the user sees the failure, with its text
    server.refresh_from_db()
    assert ended == server
    assert ended.status == Server.Status.FAILED
    assert (server.status, server.exit_code, server.poll_status) == (Server.Status.FAILED, 1, 1)
    assert server.error == "The image does not exist."
    assert before <= server.stopped_at <= timezone.now()
    assert (server.spawner_state, server.start_lease_until) == (None, None)
    event = server.events.get()
    assert (event.progress, event.message, event.failed, event.ready) == (
        100,
        "The image does not exist.",
        True,
        False,
    )
    # and the Hub got the failed event and the flavor counts without this server
    assert event_posts(fake_hub) == [
        {
            "progress": 100,
            "message": "The image does not exist.",
            "html_message": "The image does not exist.",
            "failed": True,
        }
    ]
    assert [update["small"]["current"] for update in flavor_updates(fake_hub)] == [0]
    assert worker.names() == ["hub_event_send_task", "hub_flavors_send_task"]


def test_a_lost_server_fails_and_a_hub_that_waits_for_its_answer_gets_no_event(
    db, fake_hub, home, worker
):
    # given a server the Outpost lost contact with, whose Hub learns of the end by polling
    server = new_server(
        fake_hub,
        home,
        status=Server.Status.UNKNOWN,
        unknown_since=timezone.now() - timedelta(hours=1),
        spawner_state={"pid": 4242},
    )
    # when
    worker.run(lambda: end.server_mark_failed(server_id=server.pk, error="We lost contact."))
    # then
    server.refresh_from_db()
    assert (server.status, server.exit_code, server.error) == (
        Server.Status.FAILED,
        1,
        "We lost contact.",
    )
    assert (server.unknown_since, server.spawner_state) == (None, None)
    assert server.events.get().failed
    assert event_posts(fake_hub) == []
    assert [update["small"]["current"] for update in flavor_updates(fake_hub)] == [0]


def test_a_stopped_server_keeps_its_exit_code_and_its_hub_gets_only_the_flavor_counts(
    db, fake_hub, home, worker
):
    # given a running server, and another one of the same flavor that goes on running
    server = new_server(fake_hub, home, address_via_callback=True, spawner_state={"pid": 4242})
    ServerFactory(outpost=server.outpost, hub=server.hub, flavor=server.flavor)
    # when its process exited with status 7
    ended = worker.run(lambda: end.server_mark_stopped(server_id=server.pk, exit_code=7))
    # then
    server.refresh_from_db()
    assert ended.status == Server.Status.STOPPED
    assert (server.status, server.exit_code, server.poll_status) == (Server.Status.STOPPED, 7, 7)
    assert server.error == ""
    assert server.stopped_at is not None
    assert server.spawner_state is None
    assert not server.events.exists()
    assert event_posts(fake_hub) == []
    assert [update["small"]["current"] for update in flavor_updates(fake_hub)] == [1]


def test_a_stop_can_say_why_the_server_stopped(db, fake_hub, home, worker):
    # given
    server = new_server(fake_hub, home)
    # when
    worker.run(
        lambda: end.server_mark_stopped(
            server_id=server.pk, exit_code=0, error="Stopped by the Outpost's administrators."
        )
    )
    # then
    server.refresh_from_db()
    assert (server.status, server.exit_code) == (Server.Status.STOPPED, 0)
    assert server.error == "Stopped by the Outpost's administrators."


def test_an_ended_server_is_not_ended_again(db, fake_hub, home, worker):
    # given a server that stopped with status 7 an hour ago
    stopped_at = timezone.now() - timedelta(hours=1)
    server = new_server(
        fake_hub, home, status=Server.Status.STOPPED, exit_code=7, stopped_at=stopped_at
    )
    # when a late failure arrives (say, the reconciler's, racing the stop)
    ended = worker.run(lambda: end.server_mark_failed(server_id=server.pk, error="Too late."))
    # then the server the Hub already saw end stays as it ended
    server.refresh_from_db()
    assert ended.status == Server.Status.STOPPED
    assert (server.status, server.exit_code, server.error, server.stopped_at) == (
        Server.Status.STOPPED,
        7,
        "",
        stopped_at,
    )
    assert not server.events.exists()
    assert worker.queued == []
    assert fake_hub.calls == []


def test_ending_a_deleted_server_does_nothing(db, worker):
    # when
    stopped = worker.run(lambda: end.server_mark_stopped(server_id=987654, exit_code=0))
    failed = worker.run(lambda: end.server_mark_failed(server_id=987654, error="Gone."))
    # then
    assert (stopped, failed) == (None, None)
    assert worker.queued == []


# --- The stop task --------------------------------------------------------------------------


def test_a_stop_before_the_start_ran_ends_the_server_once_without_running_it(
    db, fake_hub, home, worker
):
    # given a request no start task took yet, which the Hub deleted
    server = new_server(
        fake_hub, home, status=Server.Status.REQUESTED, stop_requested_at=timezone.now()
    )
    # when
    worker.run(lambda: tasks.server_stop_run_task(server.pk))
    # then
    server.refresh_from_db()
    assert (server.status, server.exit_code, server.poll_status) == (Server.Status.STOPPED, 0, 0)
    assert not server.events.exists()
    assert worker.names() == ["hub_flavors_send_task"]
    assert not home.exists()  # the spawner never ran


def test_a_stop_while_a_live_start_attempt_runs_is_left_to_that_attempt(
    db, fake_hub, home, worker, killer
):
    # given a start whose attempt holds its lease (it watches stop_requested_at and cancels)
    asked = timezone.now() - timedelta(seconds=5)
    lease = timezone.now() + timedelta(minutes=1)
    server, pid = with_process(
        new_server(fake_hub, home, status=Server.Status.REQUESTED),
        killer,
        status=Server.Status.PENDING,
        start_lease_until=lease,
        stop_requested_at=asked,
    )
    # when
    worker.run(lambda: tasks.server_stop_run_task(server.pk))
    # then the stop task did not touch the attempt's server nor its process
    server.refresh_from_db()
    assert server.status == Server.Status.PENDING
    assert (server.start_lease_until, server.stop_requested_at) == (lease, asked)
    assert alive(pid)
    assert worker.queued == []


def test_a_stop_after_the_start_attempt_died_stops_what_it_left(db, fake_hub, home, worker, killer):
    # given a start whose attempt died after its spawner made a process (its lease ran out)
    server, pid = with_process(
        new_server(fake_hub, home, status=Server.Status.REQUESTED),
        killer,
        status=Server.Status.PENDING,
        start_lease_until=timezone.now() - timedelta(seconds=30),
        stop_requested_at=timezone.now(),
    )
    # when
    worker.run(lambda: tasks.server_stop_run_task(server.pk))
    # then
    server.refresh_from_db()
    assert (server.status, server.exit_code) == (Server.Status.STOPPED, 0)
    assert (server.start_lease_until, server.spawner_state) == (None, None)
    assert not alive(pid)
    assert worker.names() == ["hub_flavors_send_task"]


def test_a_stop_of_an_unknown_server_stops_its_process(db, fake_hub, home, worker, killer):
    # given
    server, pid = with_process(
        new_server(fake_hub, home),
        killer,
        status=Server.Status.UNKNOWN,
        unknown_since=timezone.now(),
        stop_requested_at=timezone.now(),
    )
    # when
    worker.run(lambda: tasks.server_stop_run_task(server.pk))
    # then
    server.refresh_from_db()
    assert (server.status, server.exit_code, server.unknown_since) == (
        Server.Status.STOPPED,
        0,
        None,
    )
    assert not alive(pid)


def test_a_stop_the_system_refuses_leaves_the_server_stopping_for_a_retry(
    db, fake_hub, home, worker, killer
):
    # given a running server the Hub deleted, on a system that refuses stops
    asked = timezone.now() - timedelta(seconds=5)
    server, pid = with_process(
        new_server(fake_hub, home, spawner_class=REFUSING), killer, stop_requested_at=asked
    )
    (home / "olga" / "refuse-stops").touch()
    # when
    with pytest.raises(SpawnerFailed, match=f"Could not stop server {server.pk}") as raised:
        worker.run(lambda: end.server_stop_run(server_id=server.pk))
    # then the server is stopping (a Hub's poll says it may still run), from the Hub's stop
    # time, with the state a retry stops it from; the spawner's error is the cause
    assert "refuses the stop" in str(raised.value.__cause__)
    server.refresh_from_db()
    assert server.status == Server.Status.STOPPING
    assert server.poll_status is None
    assert server.stop_requested_at == asked
    assert server.spawner_state["pid"] == pid
    assert alive(pid)
    assert worker.queued == []
    # and when the system takes stops again, the retry ends it
    (home / "olga" / "refuse-stops").unlink()
    worker.run(lambda: tasks.server_stop_run_task(server.pk))
    server.refresh_from_db()
    assert (server.status, server.exit_code) == (Server.Status.STOPPED, 0)
    assert not alive(pid)


def test_a_stop_of_a_start_whose_attempt_died_gives_its_lease_up_even_if_it_fails(
    db, fake_hub, home, worker, killer
):
    # given a dead start attempt's process, on a system that refuses stops
    server, pid = with_process(
        new_server(fake_hub, home, spawner_class=REFUSING, status=Server.Status.REQUESTED),
        killer,
        status=Server.Status.PENDING,
        start_lease_until=timezone.now() - timedelta(seconds=30),
        stop_requested_at=timezone.now(),
    )
    (home / "olga" / "refuse-stops").touch()
    # when
    with pytest.raises(SpawnerFailed):
        worker.run(lambda: end.server_stop_run(server_id=server.pk))
    # then the stop task owns it now: no start attempt may take it over
    server.refresh_from_db()
    assert (server.status, server.start_lease_until) == (Server.Status.STOPPING, None)
    assert alive(pid)


def test_a_stop_that_fails_on_every_retry_fails_the_server_and_tells_the_admins(
    db, fake_hub, home, worker, killer, caplog
):
    # given a running server on a system that refuses stops
    server, pid = with_process(
        new_server(fake_hub, home, spawner_class=REFUSING), killer, stop_requested_at=timezone.now()
    )
    (home / "olga" / "refuse-stops").touch()
    # when the stop task's last retry fails too
    worker.run(
        lambda: tasks.server_stop_run_task.apply(args=[server.pk], retries=tasks.STOP_MAX_RETRIES)
    )
    # then the user reads that the admins must act, and they are told so in the log
    server.refresh_from_db()
    assert (server.status, server.exit_code, server.poll_status) == (Server.Status.FAILED, 1, 1)
    assert server.error == "The server could not be stopped; ask the Outpost's administrators."
    assert server.events.get(failed=True).message == server.error
    message = admin_errors(caplog)[-1]
    assert message.startswith(f"Server {server.pk} could not be stopped after every retry")
    assert "on the Outpost's system" in message
    assert message.endswith("must be stopped by hand")
    assert alive(pid)  # what the system would not stop is still there, as the log says
    assert [update["small"]["current"] for update in flavor_updates(fake_hub)] == [0]


def test_a_stop_of_an_ended_server_changes_nothing(db, fake_hub, home, worker):
    # given a server that failed, its stop task delivered late
    server = new_server(
        fake_hub,
        home,
        status=Server.Status.FAILED,
        exit_code=1,
        error="The image does not exist.",
        stop_requested_at=timezone.now(),
    )
    # when
    worker.run(lambda: tasks.server_stop_run_task(server.pk))
    # then
    server.refresh_from_db()
    assert (server.status, server.exit_code, server.error) == (
        Server.Status.FAILED,
        1,
        "The image does not exist.",
    )
    assert worker.queued == []


# --- What a dead start attempt left: stopped, or handed over to the stop task ----------------


def test_a_leftover_is_terminated_at_once_from_the_state_it_left(db, fake_hub, home, killer):
    # given a process a dead attempt started (its saved state given, not on the row), which
    # would ignore an interrupt
    server = new_server(
        fake_hub, home, status=Server.Status.PENDING, cmd=[sys.executable, "-c", SIGNALS_SCRIPT]
    )
    state = spawn(server)
    killer.append(state["pid"])
    wait_until(lambda: (home / "olga" / "ready").exists(), what="the handlers")
    assert server.spawner_state is None
    # when
    stopped = end.server_stop_leftover(server=server, state=state)
    # then it was terminated straight away, not interrupted first
    assert stopped is True
    assert not alive(state["pid"])
    assert (home / "olga" / "signals").read_text().split() == ["SIGTERM"]


def test_a_redelivered_start_whose_leftover_cannot_be_stopped_hands_it_to_the_stop_task(
    db, fake_hub, home, worker, killer, caplog
):
    # given a start whose attempt died after its spawner made a process, on a system that
    # refuses stops
    server, pid = with_process(
        new_server(fake_hub, home, spawner_class=REFUSING, status=Server.Status.REQUESTED),
        killer,
        status=Server.Status.PENDING,
        started_at=timezone.now() - timedelta(seconds=150),
        start_lease_until=timezone.now() - timedelta(seconds=30),
    )
    state = server.spawner_state
    (home / "olga" / "refuse-stops").touch()
    # when the start task is redelivered
    worker.run(lambda: tasks.server_start_run_task(server.pk))
    # then no second server was started: the server is stopping, with the leftover's state,
    # and the stop task (which retries) is queued on the Outpost's queue
    server.refresh_from_db()
    assert server.status == Server.Status.STOPPING
    assert server.spawner_state == state
    assert server.stop_requested_at is not None
    assert server.start_lease_until is None
    assert not server.events.exists()
    assert worker.queued == [("server_stop_run_task", (server.pk,), server.outpost.celery_queue)]
    assert server.error == ""  # nothing failed that the user should read
    assert alive(pid)
    assert f"server {server.pk} left" in caplog.text


def test_a_timed_out_start_whose_leftover_cannot_be_stopped_at_once_still_ends_failed(
    db, fake_hub, home, worker, killer
):
    # given a start past its timeout whose attempt died, on a system that refuses stops; its
    # Hub got an early answer and waits for call-backs
    server, pid = with_process(
        new_server(
            fake_hub,
            home,
            spawner_class=REFUSING,
            status=Server.Status.REQUESTED,
            address_via_callback=True,
        ),
        killer,
        status=Server.Status.PENDING,
        started_at=timezone.now() - timedelta(hours=1),
        start_lease_until=timezone.now() - timedelta(minutes=30),
    )
    (home / "olga" / "refuse-stops").touch()
    # when the reconciler times it out
    worker.run(lambda: start.server_start_time_out(server_id=server.pk))
    # then it is handed to the stop task, with the reason for the user
    server.refresh_from_db()
    assert server.status == Server.Status.STOPPING
    assert server.error == "The server did not start within 10 minutes."
    assert worker.names() == ["server_stop_run_task"]
    # and when the system takes stops again and the stop task runs, the start ends failed,
    # as one whose leftover stopped at once does: the Hub reads 1 and is told why
    (home / "olga" / "refuse-stops").unlink()
    worker.run(lambda: tasks.server_stop_run_task(server.pk))
    server.refresh_from_db()
    assert (server.status, server.exit_code, server.poll_status) == (Server.Status.FAILED, 1, 1)
    assert server.error == "The server did not start within 10 minutes."
    assert not alive(pid)
    assert [(e["message"], e["failed"]) for e in event_posts(fake_hub)] == [
        ("The server did not start within 10 minutes.", True)
    ]


def test_a_hand_over_of_a_server_that_ended_meanwhile_tells_the_admins(
    db, fake_hub, home, worker, caplog
):
    # given
    server = new_server(fake_hub, home, status=Server.Status.STOPPED, exit_code=0)
    state = {"pid": 4242, "job_id": "slurm-17"}
    # when
    worker.run(lambda: end.server_stop_hand_over(server_id=server.pk, state=state, error="Late."))
    # then the ended server stays ended, and the admins learn what may still run
    server.refresh_from_db()
    assert (server.status, server.spawner_state, server.error) == (Server.Status.STOPPED, None, "")
    assert worker.queued == []
    (message,) = admin_errors(caplog)
    assert message.startswith(f"Server {server.pk} ended meanwhile")
    assert str(state) in message
    assert message.endswith("stop it by hand")


def test_a_hand_over_of_a_deleted_server_tells_the_admins(db, worker, caplog):
    # when
    worker.run(lambda: end.server_stop_hand_over(server_id=987654, state={"pid": 4242}))
    # then
    assert worker.queued == []
    (message,) = admin_errors(caplog)
    assert message.startswith("Server 987654 ended meanwhile")
    assert "{'pid': 4242}" in message
