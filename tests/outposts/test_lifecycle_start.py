"""The worker side of a start (outposts/lifecycle/start.py), against real local servers:
what the row, the events, the queued tasks and the processes show after each way a start
can go. The start lease and its heartbeat are checked on the row, with a clock the test
moves (the lease is about time, and waiting two minutes for it is not a test)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone
from jupyterhub.spawner import SimpleLocalProcessSpawner
from traitlets import Bool, Float, Unicode

from outposts import tasks
from outposts.errors import SpawnerFailed
from outposts.lifecycle import start
from outposts.lifecycle.end import server_mark_failed
from outposts.models import Server
from outposts.runner.spawner import SpawnerRunner
from portal.crypto import encrypt_text
from tests.factories import FlavorFactory, OutpostFactory, OutpostSSHFactory, ServerFactory
from tests.support.hub import FakeHub
from tests.support.processes import alive, json_if_up, wait_until
from tests.support.spawners import serve_config
from tunnels.models import Tunnel

HERE = "tests.outposts.test_lifecycle_start"


# --- Spawners the tests configure on their Outposts by dotted path ---------------------------


def _row(user_name: str) -> dict:
    return (
        Server.objects.filter(user_name=user_name)
        .values("status", "started_at", "start_lease_until", "spawner_state")
        .get()
    )


def _write_row(user_name: str, **fields) -> None:
    Server.objects.filter(user_name=user_name).update(**fields)


def _delete_row(user_name: str) -> None:
    Server.objects.filter(user_name=user_name).delete()


class RefusingStopSpawner(SimpleLocalProcessSpawner):
    """Starts as usual; every stop fails (a batch system that refuses to cancel)."""

    async def stop(self, now=False):
        raise RuntimeError("the system refuses the stop")


class ProgressSpawner(SimpleLocalProcessSpawner):
    """Reports progress below, inside and above what a Hub shows for a start under way."""

    async def progress(self):
        for progress, message in [(5, "Queued."), (50, "Pulling the image."), (150, "Almost.")]:
            yield {"progress": progress, "message": message}


class WatchedStartSpawner(SimpleLocalProcessSpawner):
    """Starts the process, then waits (up to 10 s) until the portal's row holds its pid, as
    the start's heartbeat saves it, and writes what the row showed to <home>/row.json."""

    async def start(self):
        result = await super().start()
        for _ in range(50):
            row = await sync_to_async(_row)(self.user.name)
            if (row["spawner_state"] or {}).get("pid") == self.pid:
                break
            await asyncio.sleep(0.2)
        Path(self.home_dir, "row.json").write_text(json.dumps(row, default=str))
        return result


class MeanwhileSpawner(SimpleLocalProcessSpawner):
    """Starts the process, then something happens to the server (``meanwhile``: a stop is
    asked for, the row is deleted, another attempt takes the start over), then start()
    returns, raises or lingers for a minute (``then``). Its stops write the ``now`` they got
    to <home>/stops and, with ``refuse_stop``, fail."""

    meanwhile = Unicode("stop").tag(config=True)
    then = Unicode("return").tag(config=True)
    linger = Float(60.0).tag(config=True)
    refuse_stop = Bool(False).tag(config=True)

    async def progress(self):
        # No progress steps: none may land after the row is deleted.
        return
        yield

    async def start(self):
        result = await super().start()
        Path(self.home_dir, "spawned.pid").write_text(str(self.pid))
        if self.meanwhile == "stop":
            await sync_to_async(_write_row)(self.user.name, stop_requested_at=timezone.now())
        elif self.meanwhile == "delete":
            await sync_to_async(_delete_row)(self.user.name)
        elif self.meanwhile == "take-over":
            await sync_to_async(_write_row)(self.user.name, **NEW_OWNER)
        if self.then == "raise":
            raise RuntimeError("the spawner broke after the take-over")
        if self.then == "linger":
            await asyncio.sleep(self.linger)
        return result

    async def stop(self, now=False):
        with Path(self.home_dir, "stops").open("a") as stops:
            stops.write(f"{now}\n")
        if self.refuse_stop:
            raise RuntimeError("the system refuses the stop")
        await super().stop(now=now)


class PortlessSpawner(SimpleLocalProcessSpawner):
    """Runs the server, but answers an address without a port: none a tunnel can reach."""

    async def start(self):
        await super().start()
        Path(self.home_dir, "spawned.pid").write_text(str(self.pid))
        return "http://node7/"


# What another attempt that took a start over wrote on the row.
NEW_OWNER = {
    "start_lease_until": timezone.now() + timedelta(days=1),
    "spawner_state": {"pid": 1, "owner": "the other attempt"},
}


# --- Helpers and fixtures ----------------------------------------------------------------------


def new_server(home, *, spawner="", config=None, outpost_kwargs=None, **kwargs) -> Server:
    """A requested server of "olga" on an Outpost of its own running SERVE_SCRIPT."""
    outpost = OutpostFactory(
        spawner_config=serve_config(home, **(config or {})),
        spawner_class=f"{HERE}.{spawner}"
        if spawner
        else "jupyterhub.spawner.SimpleLocalProcessSpawner",
        **(outpost_kwargs or {}),
    )
    hub = FakeHub.__new__(FakeHub)
    hub.url = "http://127.0.0.1:9"  # nothing listens: Hub calls are not under test here
    kwargs.setdefault("status", Server.Status.REQUESTED)
    kwargs.setdefault("address", "")
    return ServerFactory(outpost=outpost, name="", user_name="olga", env=hub.env("olga"), **kwargs)


def pending_of_a_dead_attempt(server: Server, *, state=None, started_ago=150) -> Server:
    """Make ``server`` pending as a start attempt that died left it: its lease ran out."""
    Server.objects.filter(pk=server.pk).update(
        status=Server.Status.PENDING,
        started_at=timezone.now() - timedelta(seconds=started_ago),
        spawner_state=state,
        start_lease_until=timezone.now() - timedelta(seconds=30),
    )
    server.refresh_from_db()
    return server


def process_of_a_dead_attempt(server: Server) -> int:
    """Start ``server``'s real process as a dead attempt did; its state is on the row."""
    runner = SpawnerRunner.for_server(server)
    asyncio.run(runner.start())
    pending_of_a_dead_attempt(server, state=runner.get_state())
    return server.spawner_state["pid"]


def events(server: Server) -> list[tuple[int, str]]:
    return list(server.events.order_by("pk").values_list("progress", "message"))


@pytest.fixture
def queued(monkeypatch, django_capture_on_commit_callbacks):
    """Run ``action()`` and return the tasks it queued once its rows committed, as
    (task name, args), Hub event sends left out unless ``events``. (A test's transaction
    never commits: the on-commit callbacks run by hand and the broker sends are recorded
    instead.)"""

    def run(action, *, events=False) -> list[tuple[str, tuple]]:
        sent: list[tuple[str, tuple]] = []
        for name in ("hub_address_send_task", "hub_flavors_send_task", "hub_event_send_task"):
            task = getattr(tasks, name)._get_current_object()
            monkeypatch.setattr(task, "delay", lambda *args, _name=name: sent.append((_name, args)))
        stop = tasks.server_stop_run_task._get_current_object()
        monkeypatch.setattr(
            stop,
            "apply_async",
            lambda args, queue, **kw: sent.append(("server_stop_run_task", (*args, queue))),
        )
        with django_capture_on_commit_callbacks(execute=True):
            action()
        return [item for item in sent if events or item[0] != "hub_event_send_task"]

    return run


class Clock:
    """The lifecycle's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = timezone.now()

    def __call__(self):
        return self.now

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(start, "timezone", SimpleNamespace(now=clock))
    return clock


# --- Texts users see -------------------------------------------------------------------------


def test_a_portal_error_without_text_is_shown_by_its_name():
    # when / then
    assert start.user_safe_error(SpawnerFailed()) == "SpawnerFailed"
    assert start.user_safe_error(SpawnerFailed("No node is free.")) == "No node is free."
    assert start.user_safe_error(OSError("/secret/path")) == (
        "The server could not be started (OSError); the Outpost's administrators find why "
        "on its page."
    )


# --- A start from request to running ---------------------------------------------------------


def test_a_start_records_its_steps_and_tells_the_hub_the_flavor_counts(db, home, stopper, queued):
    # given a Hub that waits for the address from a call-back, on an Outpost without flavors
    server = new_server(home, address_via_callback=True, flavor=None)
    stopper.append(server.pk)
    # when
    sent = queued(lambda: tasks.server_start_run_task(server.pk))
    # then
    server.refresh_from_db()
    assert server.status == Server.Status.RUNNING
    assert (server.last_poll_at, server.address_sent_at) == (server.ready_at, server.ready_at)
    assert server.start_lease_until is None
    assert server.end_at is None  # an Outpost without flavors sets no runtime
    assert events(server)[0] == (20, "Starting the server.")
    last = server.events.order_by("pk").last()
    assert (last.progress, last.message, last.ready) == (100, "Server ready.", True)
    assert sent == [
        ("hub_address_send_task", (server.pk,)),
        ("hub_flavors_send_task", (server.pk,)),
    ]


def test_a_server_of_an_outpost_reached_through_the_agent_lands_with_the_agents_address(
    db, home, stopper, settings
):
    # given a start on an Outpost whose servers the tunnel agent reaches
    settings.TUNNEL_BIND_PORTS = "21000-21000"
    server = new_server(home)
    stopper.append(server.pk)
    OutpostSSHFactory(outpost=server.outpost, advertised_host="tunnel-agent")
    # when it starts
    tasks.server_start_run_task(server.pk)
    # then the Hub is given the agent's address, and the tunnel leads to the server's own
    server.refresh_from_db()
    assert (server.status, server.address) == (Server.Status.RUNNING, "tunnel-agent:21000")
    tunnel = Tunnel.objects.get(server=server)
    assert tunnel.remote_host == "127.0.0.1"
    assert wait_until(lambda: json_if_up(f"http://127.0.0.1:{tunnel.remote_port}/user/olga/"))


def test_a_server_the_agent_cannot_reach_fails_with_why_and_is_stopped(db, home):
    # given a start on an Outpost reached through the agent, whose spawner answers an
    # address without a port
    server = new_server(home, spawner="PortlessSpawner")
    OutpostSSHFactory(outpost=server.outpost)
    # when it starts
    tasks.server_start_run_task(server.pk)
    # then it failed, saying why, with no tunnel, and its process was stopped
    server.refresh_from_db()
    assert server.status == Server.Status.FAILED
    assert server.error == "The server's address 'http://node7/' is not host:port."
    assert not Tunnel.objects.filter(server=server).exists()
    assert not alive(int((home / "olga" / "spawned.pid").read_text()))


@pytest.mark.parametrize(
    ("named", "expected"),
    [
        ((), []),
        (("JUPYTERHUB_EVENTS_URL",), ["hub_event_send_task"] * 3),
        (("JUPYTERHUB_FLAVORS_UPDATE_URL",), ["hub_flavors_send_task"]),
    ],
)
def test_a_hub_is_sent_only_the_calls_it_named_a_url_for(
    db, home, stopper, queued, named, expected
):
    # given a start whose Hub named only these of its two call-back URLs (our hubclient
    # names neither: it follows the events endpoint)
    server = new_server(home, address_via_callback=False)
    left_out = {"JUPYTERHUB_EVENTS_URL", "JUPYTERHUB_FLAVORS_UPDATE_URL"} - set(named)
    env = {key: value for key, value in server.env.items() if key not in left_out}
    Server.objects.filter(pk=server.pk).update(env=env)
    stopper.append(server.pk)
    # when it starts (three progress steps: starting, the spawner's, ready)
    sent = queued(lambda: tasks.server_start_run_task(server.pk), events=True)
    # then only those calls are queued
    assert [name for name, _ in sent] == expected
    assert server.events.count() == 3


def test_a_hub_that_got_the_address_in_the_answer_gets_no_address_call(db, home, stopper, queued):
    # given
    server = new_server(home, address_via_callback=False)
    stopper.append(server.pk)
    # when
    sent = queued(lambda: tasks.server_start_run_task(server.pk))
    # then
    server.refresh_from_db()
    assert server.status == Server.Status.RUNNING
    assert server.address_sent_at is None
    assert sent == [("hub_flavors_send_task", (server.pk,))]


def test_an_address_already_sent_is_not_sent_again(db, home, stopper, queued):
    # given
    sent_at = timezone.now() - timedelta(minutes=1)
    server = new_server(home, address_via_callback=True, address_sent_at=sent_at)
    stopper.append(server.pk)
    # when
    sent = queued(lambda: tasks.server_start_run_task(server.pk))
    # then
    server.refresh_from_db()
    assert server.address_sent_at == sent_at
    assert sent == [("hub_flavors_send_task", (server.pk,))]


def test_spawner_progress_is_kept_between_the_start_and_ready_steps(db, home, stopper):
    # given
    server = new_server(home, spawner="ProgressSpawner")
    stopper.append(server.pk)
    # when
    tasks.server_start_run_task(server.pk)
    # then
    server.refresh_from_db()
    assert events(server) == [
        (20, "Starting the server."),
        (20, "Queued."),
        (50, "Pulling the image."),
        (99, "Almost."),
        (100, "Server ready."),
    ]


def test_while_it_starts_the_server_is_pending_under_a_lease_with_its_pid_saved(db, home, stopper):
    # given a spawner whose start returns only once the row holds its pid
    server = new_server(home, spawner="WatchedStartSpawner")
    stopper.append(server.pk)
    before = timezone.now()
    # when
    tasks.server_start_run_task(server.pk)
    # then what the row showed while start() ran
    after = timezone.now()
    seen = json.loads((home / "olga" / "row.json").read_text())
    server.refresh_from_db()
    assert seen["status"] == Server.Status.PENDING
    assert seen["spawner_state"]["pid"] == server.spawner_state["pid"]
    started = server.started_at
    assert before <= started <= after
    assert seen["started_at"] == str(started)
    lease = datetime.fromisoformat(seen["start_lease_until"])
    assert started + start.START_LEASE <= lease <= after + start.START_LEASE
    assert server.status == Server.Status.RUNNING


def test_a_start_that_cannot_build_its_spawner_fails_with_a_text_safe_for_users(db, home):
    # given an Outpost whose spawner class does not exist on this host
    server = new_server(home)
    server.outpost.spawner_class = "no_such_module.secret.Spawner"
    server.outpost.save()
    # when
    tasks.server_start_run_task(server.pk)
    # then
    server.refresh_from_db()
    assert server.status == Server.Status.FAILED
    assert server.error == (
        "The server could not be started (ModuleNotFoundError); the Outpost's administrators "
        "find why on its page."
    )
    assert server.events.get(failed=True).message == server.error
    # and the server's page tells its administrators why, which the user is not told
    assert (
        "ERROR Building the spawner failed: ModuleNotFoundError: No module named "
        "'no_such_module'" in server.spawner_log
    )


def test_a_spawner_error_fails_the_start_with_its_exact_user_text(db, home):
    # given
    server = new_server(home, config={"cmd": ["/no/such/secret/path/cmd"]})
    # when
    tasks.server_start_run_task(server.pk)
    # then
    server.refresh_from_db()
    assert (server.status, server.exit_code) == (Server.Status.FAILED, 1)
    assert server.error == (
        "The server could not be started (FileNotFoundError); the Outpost's administrators "
        "find why on its page."
    )
    # and the server's page shows what the spawner logged, and the error it raised
    lines = server.spawner_log.splitlines()
    assert "INFO Spawning /no/such/secret/path/cmd" in lines[0]
    assert lines[-1].endswith(
        "ERROR The start failed: FileNotFoundError: [Errno 2] No such file or directory: "
        "'/no/such/secret/path/cmd'"
    )


def test_a_start_that_never_returns_fails_with_the_timeout_in_minutes(db, home):
    # given
    server = new_server(
        home,
        spawner="MeanwhileSpawner",
        config={"meanwhile": "nothing", "then": "linger"},
        outpost_kwargs={"start_timeout": timedelta(seconds=3)},
    )
    # when
    tasks.server_start_run_task(server.pk)
    # then
    server.refresh_from_db()
    pid = int((home / "olga" / "spawned.pid").read_text())
    assert server.status == Server.Status.FAILED
    assert server.error == "The server did not start within 0.05 minutes."
    assert not alive(pid)


def test_a_redelivered_start_has_only_what_is_left_of_the_timeout(db, home):
    # given a start whose dead first attempt began 58 s into a 60 s timeout
    server = new_server(
        home,
        spawner="MeanwhileSpawner",
        config={"meanwhile": "nothing", "then": "linger", "linger": 300},
        outpost_kwargs={"start_timeout": timedelta(seconds=60)},
    )
    started_at = timezone.now() - timedelta(seconds=58)
    pending_of_a_dead_attempt(server, started_ago=58)
    began = time.monotonic()
    # when
    tasks.server_start_run_task(server.pk)
    # then it gave up after the 2 s left, not after a whole timeout
    took = time.monotonic() - began
    server.refresh_from_db()
    assert server.status == Server.Status.FAILED
    assert server.error == "The server did not start within 1 minutes."
    assert took < 40
    assert abs(server.started_at - started_at) < timedelta(seconds=1)


def test_a_stop_asked_for_while_it_starts_cancels_the_start_with_exit_code_0(db, home, killer):
    # given a spawner whose start() is still pending when the stop is asked for
    server = new_server(
        home, spawner="MeanwhileSpawner", config={"meanwhile": "stop", "then": "linger"}
    )
    # when
    tasks.server_start_run_task(server.pk)
    # then
    pid = int((home / "olga" / "spawned.pid").read_text())
    killer.append(pid)
    server.refresh_from_db()
    assert (server.status, server.exit_code) == (Server.Status.STOPPED, 0)
    assert not alive(pid)


def test_a_stop_asked_for_as_the_start_returns_stops_the_server_at_once(db, home, killer):
    # given a stop that lands between the start's last check and its end
    server = new_server(home, spawner="MeanwhileSpawner", config={"meanwhile": "stop"})
    # when
    tasks.server_start_run_task(server.pk)
    # then
    pid = int((home / "olga" / "spawned.pid").read_text())
    killer.append(pid)
    server.refresh_from_db()
    assert (server.status, server.exit_code) == (Server.Status.STOPPED, 0)
    assert not alive(pid)
    assert (home / "olga" / "stops").read_text() == "True\n"
    assert "Server ready." not in [message for _, message in events(server)]


def test_a_server_deleted_while_it_starts_has_its_process_stopped(db, home, killer):
    # given
    server = new_server(home, spawner="MeanwhileSpawner", config={"meanwhile": "delete"})
    # when
    tasks.server_start_run_task(server.pk)
    # then
    pid = int((home / "olga" / "spawned.pid").read_text())
    killer.append(pid)
    assert not Server.objects.filter(pk=server.pk).exists()
    assert not alive(pid)


@pytest.mark.parametrize("then", ["return", "raise"])
def test_an_attempt_whose_start_was_taken_over_leaves_the_server_to_the_new_owner(
    db, home, killer, then
):
    # given another attempt takes the start over just before this one's start() ends
    server = new_server(
        home, spawner="MeanwhileSpawner", config={"meanwhile": "take-over", "then": then}
    )
    # when
    tasks.server_start_run_task(server.pk)
    # then what this attempt made is stopped and the new owner's record is untouched
    pid = int((home / "olga" / "spawned.pid").read_text())
    killer.append(pid)
    server.refresh_from_db()
    assert not alive(pid)
    assert server.status == Server.Status.PENDING
    assert (server.start_lease_until, server.spawner_state) == (
        NEW_OWNER["start_lease_until"],
        NEW_OWNER["spawner_state"],
    )
    assert server.error == ""


def test_a_taken_over_start_that_cannot_be_stopped_is_not_handed_to_the_stop_task(
    db, home, killer, queued
):
    # given
    server = new_server(
        home,
        spawner="MeanwhileSpawner",
        config={"meanwhile": "take-over", "refuse_stop": True},
    )
    # when
    sent = queued(lambda: tasks.server_start_run_task(server.pk))
    # then the new owner keeps the server: no stop of this attempt's process goes over it
    killer.append(int((home / "olga" / "spawned.pid").read_text()))
    server.refresh_from_db()
    assert server.status == Server.Status.PENDING
    assert server.spawner_state == NEW_OWNER["spawner_state"]
    assert sent == []


def test_a_start_with_a_stop_asked_for_before_it_ran_is_stopped_without_starting(db, home):
    # given
    server = new_server(home, stop_requested_at=timezone.now())
    # when
    tasks.server_start_run_task(server.pk)
    # then
    server.refresh_from_db()
    assert (server.status, server.exit_code) == (Server.Status.STOPPED, 0)
    assert events(server) == []
    assert not (home / "olga").exists()


def test_a_spawner_that_cannot_stop_still_starts_a_fresh_server(db, home, killer):
    # given a requested server: no earlier attempt left anything to stop
    server = new_server(home, spawner="RefusingStopSpawner")
    # when
    tasks.server_start_run_task(server.pk)
    # then
    server.refresh_from_db()
    killer.append(server.spawner_state["pid"])
    assert server.status == Server.Status.RUNNING


def test_a_leftover_that_cannot_be_stopped_goes_to_the_stop_task_instead_of_a_start(
    db, home, queued
):
    # given a dead attempt's state, on a system that refuses stops
    server = new_server(home, spawner="RefusingStopSpawner")
    leftover = {"pid": 999999}
    pending_of_a_dead_attempt(server, state=leftover)
    # when
    sent = queued(lambda: tasks.server_start_run_task(server.pk))
    # then
    server.refresh_from_db()
    assert server.status == Server.Status.STOPPING
    assert server.spawner_state == leftover
    assert events(server) == []
    assert sent == [("server_stop_run_task", (server.pk, server.outpost.celery_queue))]


def test_a_redelivered_start_keeps_when_the_start_began(db, home, stopper, killer):
    # given
    server = new_server(home)
    stopper.append(server.pk)
    killer.append(process_of_a_dead_attempt(server))
    began = server.started_at
    # when
    tasks.server_start_run_task(server.pk)
    # then
    server.refresh_from_db()
    assert server.status == Server.Status.RUNNING
    assert server.started_at == began


# --- The heartbeat and the lease -------------------------------------------------------------


def ownership_of(server: Server) -> start._StartOwnership:
    claim = start._start_claim(server.pk)
    assert claim is not None
    return start._StartOwnership(claim)


def test_a_beat_saves_a_new_state_and_writes_nothing_when_nothing_changed(db, home, clock):
    # given an attempt that took over a dead one's start, whose state it still carries
    server = pending_of_a_dead_attempt(new_server(home), state={"pid": 42})
    ownership = ownership_of(server)
    claimed = Server.objects.get(pk=server.pk)
    # when nothing changed
    clock.advance(seconds=10)
    assert ownership.beat({"pid": 42}) is True
    # then nothing was written
    assert Server.objects.get(pk=server.pk).updated_at == claimed.updated_at
    # when the spawner's state changed
    clock.advance(seconds=5)
    assert ownership.beat({"pid": 43}) is True
    # then it is saved, the lease left as it was (not due yet)
    row = Server.objects.get(pk=server.pk)
    assert (row.spawner_state, row.updated_at) == ({"pid": 43}, clock.now)
    assert row.start_lease_until == claimed.start_lease_until
    # and the same state again is not written again
    clock.advance(seconds=5)
    assert ownership.beat({"pid": 43}) is True
    assert Server.objects.get(pk=server.pk).updated_at == row.updated_at


def test_the_lease_is_renewed_every_30_seconds_and_the_renewed_lease_owns_the_start(
    db, home, clock
):
    # given
    server = new_server(home)
    ownership = ownership_of(server)
    claimed_at = clock.now
    # when the renewal is due, to the microsecond
    clock.advance(seconds=30)
    assert ownership.beat({}) is True
    # then
    renewed = Server.objects.get(pk=server.pk)
    assert renewed.start_lease_until == claimed_at + timedelta(seconds=30) + start.START_LEASE
    assert renewed.updated_at == clock.now
    assert ownership.holds()
    # and 20 s later nothing is due: the lease stays
    clock.advance(seconds=20)
    assert ownership.beat({}) is True
    assert Server.objects.get(pk=server.pk).start_lease_until == renewed.start_lease_until
    # and the attempt still owns the server under its renewed lease: a new state is saved
    clock.advance(seconds=1)
    assert ownership.beat({"pid": 7}) is True
    assert Server.objects.get(pk=server.pk).spawner_state == {"pid": 7}


def test_a_beat_after_a_take_over_writes_nothing_and_says_the_server_is_lost(db, home, clock):
    # given an attempt whose start another attempt took over, and another pending server
    # that happens to carry the lease this attempt last wrote
    server = new_server(home)
    ownership = ownership_of(server)
    Server.objects.filter(pk=server.pk).update(**NEW_OWNER)
    other = ServerFactory(
        status=Server.Status.PENDING, start_lease_until=ownership.lease, spawner_state=None
    )
    # when
    clock.advance(seconds=5)
    beat = ownership.beat({"pid": 9})
    # then
    assert beat is False
    assert not ownership.holds()
    assert Server.objects.get(pk=server.pk).spawner_state == NEW_OWNER["spawner_state"]
    assert Server.objects.get(pk=other.pk).spawner_state is None


def test_a_beat_never_writes_to_a_server_that_is_no_longer_pending(db, home, clock):
    # given
    server = new_server(home)
    ownership = ownership_of(server)
    Server.objects.filter(pk=server.pk).update(status=Server.Status.STOPPING)
    # when
    clock.advance(seconds=5)
    beat = ownership.beat({"pid": 9})
    # then
    assert beat is False
    assert Server.objects.get(pk=server.pk).spawner_state is None


# --- A start whose task is gone, past its timeout (the reconciler's call) --------------------


def test_a_start_past_its_timeout_fails_with_the_timeout_in_minutes(db, home, queued):
    # given a request no worker took, on an Outpost with a 90 s start timeout
    server = new_server(home, outpost_kwargs={"start_timeout": timedelta(seconds=90)})
    # when
    sent = queued(lambda: start.server_start_time_out(server_id=server.pk))
    # then
    server.refresh_from_db()
    assert (server.status, server.exit_code) == (Server.Status.FAILED, 1)
    assert server.error == "The server did not start within 1.5 minutes."
    assert server.events.get(failed=True).message == server.error
    assert sent == [("hub_flavors_send_task", (server.pk,))]


def test_a_time_out_of_a_start_that_got_running_meanwhile_leaves_it_running(db, home):
    # given
    server = new_server(home, status=Server.Status.RUNNING, address="127.0.0.1:9")
    # when
    start.server_start_time_out(server_id=server.pk)
    # then
    server.refresh_from_db()
    assert (server.status, server.error) == (Server.Status.RUNNING, "")


def test_a_timed_out_start_without_a_saved_state_asks_the_spawner_for_no_stop(db, home):
    # given a system that refuses stops: nothing must be asked of it
    server = new_server(home, spawner="RefusingStopSpawner")
    pending_of_a_dead_attempt(server)
    # when
    start.server_start_time_out(server_id=server.pk)
    # then
    server.refresh_from_db()
    assert server.status == Server.Status.FAILED


def test_a_timed_out_start_has_what_its_dead_attempt_left_stopped(db, home, killer):
    # given
    server = new_server(home)
    pid = process_of_a_dead_attempt(server)
    killer.append(pid)
    # when
    start.server_start_time_out(server_id=server.pk)
    # then
    server.refresh_from_db()
    assert server.status == Server.Status.FAILED
    assert server.error == "The server did not start within 10 minutes."
    assert not alive(pid)


def test_a_timed_out_start_whose_leftover_cannot_be_stopped_goes_to_the_stop_task(db, home, queued):
    # given
    server = new_server(home, spawner="RefusingStopSpawner")
    leftover = {"pid": 999999}
    pending_of_a_dead_attempt(server, state=leftover)
    # when
    sent = queued(lambda: start.server_start_time_out(server_id=server.pk))
    # then the stop task retries; the user already reads why the start ended
    server.refresh_from_db()
    assert server.status == Server.Status.STOPPING
    assert server.spawner_state == leftover
    assert server.error == "The server did not start within 10 minutes."
    assert sent == [("server_stop_run_task", (server.pk, server.outpost.celery_queue))]


def test_of_two_take_overs_of_a_dead_start_one_wins(db, home, clock):
    # given a dead start, and another one on the same Outpost
    server = pending_of_a_dead_attempt(new_server(home))
    other = pending_of_a_dead_attempt(
        ServerFactory(outpost=server.outpost, status=Server.Status.REQUESTED)
    )
    # when the reconciler and a redelivered task both try
    first = start._start_take_over(server.pk)
    second = start._start_take_over(server.pk)
    # then
    assert first is not None and first.pk == server.pk
    assert second is None
    row = Server.objects.get(pk=server.pk)
    assert (row.start_lease_until, row.updated_at) == (clock.now + start.START_LEASE, clock.now)
    assert Server.objects.get(pk=other.pk).start_lease_until == other.start_lease_until


def test_a_start_failed_meanwhile_is_not_started_by_a_late_task(db, home):
    # given
    server = new_server(home)
    server_mark_failed(server_id=server.pk, error="gave up")
    # when
    tasks.server_start_run_task(server.pk)
    # then
    server.refresh_from_db()
    assert (server.status, server.error) == (Server.Status.FAILED, "gave up")
    assert not (home / "olga").exists()


def test_a_server_with_a_runtime_ends_that_long_after_it_is_ready(db, home, stopper):
    # given
    server = new_server(home, flavor=FlavorFactory(runtime=timedelta(minutes=30)))
    stopper.append(server.pk)
    # when
    tasks.server_start_run_task(server.pk)
    # then
    server.refresh_from_db()
    assert server.end_at == server.ready_at + timedelta(minutes=30)
    assert wait_until(lambda: json_if_up(f"http://{server.address}/user/olga/"))["user"] == "olga"


def test_a_start_that_carries_internal_ssl_certs_gives_them_to_the_server(
    db, home, stopper, settings, tmp_path
):
    # given
    settings.SERVER_CERTS_DIR = tmp_path / "certs"
    server = new_server(home)
    stopper.append(server.pk)
    token = encrypt_text(
        json.dumps({"certs": {"keyfile": "KEY", "certfile": "CERT", "cafile": "CA"}})
    )
    # when
    tasks.server_start_run_task(server.pk, token)
    # then
    server.refresh_from_db()
    assert server.status == Server.Status.RUNNING
    env = wait_until(lambda: json_if_up(f"http://{server.address}/user/olga/"))["env"]
    certfile = Path(env["JUPYTERHUB_SSL_CERTFILE"])
    assert certfile.parent == tmp_path / "certs" / f"server-{server.pk}"
    assert certfile.read_text() == "CERT"
