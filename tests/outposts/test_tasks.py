"""Lifecycle tasks run in this process against real local servers; routing checked in Redis."""

from __future__ import annotations

import asyncio
import json
import pwd
import threading
from datetime import timedelta

import pytest
import redis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.utils import timezone
from jupyterhub.spawner import SimpleLocalProcessSpawner

from outposts import services, tasks
from outposts.lifecycle import end, start
from outposts.models import Server
from outposts.runner.spawner import SpawnerRunner
from outposts.services import StartRequest
from outposts.workers import worker_heartbeat_record
from tests.factories import FlavorFactory, HubFactory, OutpostFactory, ServerFactory
from tests.support.hub import FakeHub
from tests.support.processes import alive, json_if_up, wait_until
from tests.support.spawners import serve_config


def new_server(home, *, spawner_class=None, outpost_kwargs=None, **kwargs) -> Server:
    outpost = OutpostFactory(
        spawner_config=serve_config(home),
        spawner_class=spawner_class or "jupyterhub.spawner.SimpleLocalProcessSpawner",
        **(outpost_kwargs or {}),
    )
    hub = FakeHub.__new__(FakeHub)
    hub.url = "http://127.0.0.1:9"  # nothing listens: Hub calls are not under test here
    user = kwargs.pop("user_name", "olga")
    return ServerFactory(
        outpost=outpost,
        name="",
        user_name=user,
        status=Server.Status.REQUESTED,
        address="",
        env=hub.env(user),
        **kwargs,
    )


def messages(server: Server) -> list[str]:
    return list(server.events.values_list("message", flat=True))


def test_start_runs_the_server_and_records_running_with_its_end_time(db, home, stopper):
    # given
    flavor = FlavorFactory(runtime=timedelta(hours=2))
    server = new_server(home, flavor=flavor)
    stopper.append(server.pk)
    # when
    tasks.server_start_run_task(server.pk)
    # then
    server.refresh_from_db()
    assert server.status == Server.Status.RUNNING
    assert server.end_at == server.ready_at + timedelta(hours=2)
    assert server.spawner_state["pid"]
    seen = wait_until(lambda: json_if_up(f"http://{server.address}/user/olga/"))
    assert seen["user"] == "olga"
    assert messages(server)[0] == "Starting the server."
    last = server.events.last()
    assert (last.progress, last.ready, last.failed) == (100, True, False)


def test_start_twice_starts_one_server(db, home, stopper):
    # given a start task delivered twice (acks_late after a lost acknowledgement)
    server = new_server(home)
    stopper.append(server.pk)
    tasks.server_start_run_task(server.pk)
    first = Server.objects.get(pk=server.pk)
    # when
    tasks.server_start_run_task(server.pk)
    # then
    again = Server.objects.get(pk=server.pk)
    assert (again.status, again.address, again.spawner_state) == (
        Server.Status.RUNNING,
        first.address,
        first.spawner_state,
    )


def test_stop_ends_the_process_and_records_the_stop(db, home):
    # given
    server = new_server(home)
    tasks.server_start_run_task(server.pk)
    server.refresh_from_db()
    pid = server.spawner_state["pid"]
    # when
    services.server_stop(server=server)
    tasks.server_stop_run_task(server.pk)
    # then
    server.refresh_from_db()
    assert (server.status, server.exit_code) == (Server.Status.STOPPED, 0)
    assert server.stopped_at is not None
    assert server.spawner_state is None
    assert not alive(pid)
    # and a second stop (redelivered) changes nothing
    tasks.server_stop_run_task(server.pk)
    assert Server.objects.get(pk=server.pk).stopped_at == server.stopped_at


def test_stop_before_the_start_ran_means_it_never_runs(db, home):
    # given
    server = new_server(home)
    services.server_stop(server=server)
    # when the stop task runs first, then the start task
    tasks.server_stop_run_task(server.pk)
    tasks.server_start_run_task(server.pk)
    # then
    server.refresh_from_db()
    assert server.status == Server.Status.STOPPED
    assert "Starting the server." not in messages(server)


def slow_start_in_a_worker_thread(server: Server, home) -> tuple[threading.Thread, int]:
    """Run a SlowSpawner server's start task as another worker thread would, until its
    spawner has made the process (whose pid is returned) and keeps start() pending."""

    def start() -> None:
        try:
            tasks.server_start_run_task(server.pk)
        finally:
            connection.close()

    thread = threading.Thread(target=start)
    thread.start()
    pid_file = home / "olga" / "spawned.pid"
    return thread, int(wait_until(lambda: pid_file.exists() and pid_file.read_text()))


def test_a_stop_during_the_start_cancels_it_and_ends_what_it_made(transactional_db, home):
    # given a spawner that has started a process but not returned yet
    server = new_server(home, spawner_class="tests.support.spawners.SlowSpawner")
    thread, pid = slow_start_in_a_worker_thread(server, home)
    assert alive(pid)
    # when the Hub deletes the server (server_stop's write; its task finds the start pending)
    Server.objects.filter(pk=server.pk).update(stop_requested_at=timezone.now())
    tasks.server_stop_run_task(server.pk)
    thread.join(timeout=30)
    # then
    server.refresh_from_db()
    assert server.status == Server.Status.STOPPED
    assert not alive(pid)


def test_a_start_that_never_returns_fails_after_the_start_timeout(db, home):
    # given
    server = new_server(
        home,
        spawner_class="tests.support.spawners.HangingSpawner",
        outpost_kwargs={"start_timeout": timedelta(seconds=2)},
    )
    # when
    tasks.server_start_run_task(server.pk)
    # then
    server.refresh_from_db()
    assert server.status == Server.Status.FAILED
    assert "did not start within" in server.error
    assert server.events.filter(failed=True).exists()


def test_a_spawner_error_fails_the_start_with_a_text_safe_for_users(db, home, caplog):
    # given a command that does not exist on the Outpost host
    server = new_server(home)
    server.outpost.spawner_config = serve_config(home, cmd=["/no/such/secret/path/cmd"])
    server.outpost.save()
    # when
    tasks.server_start_run_task(server.pk)
    # then
    server.refresh_from_db()
    assert server.status == Server.Status.FAILED
    assert "FileNotFoundError" in server.error
    assert "/no/such" not in server.error  # host internals stay in the log
    assert "/no/such/secret/path/cmd" in caplog.text
    failed = server.events.get(failed=True)
    assert failed.message == server.error


def test_an_unsafe_user_name_fails_the_start(db, home):
    # given
    server = new_server(home, user_name="../x")
    # when
    tasks.server_start_run_task(server.pk)
    # then
    server.refresh_from_db()
    assert server.status == Server.Status.FAILED
    assert "'../x' is not allowed" in server.error
    assert not (home.parent / "x").exists()


def test_a_system_account_cannot_start_a_server(db, home, stopper):
    # given a Hub that asks for a server of "root", on an Outpost whose accounts below uid
    # 1000 are system accounts
    server = new_server(home, user_name="root", outpost_kwargs={"min_system_uid": 1000})
    stopper.append(server.pk)
    # when
    tasks.server_start_run_task(server.pk)
    # then
    server.refresh_from_db()
    assert server.status == Server.Status.FAILED
    assert server.error == "root is a system account on this Outpost and cannot start servers."
    assert server.events.get(failed=True).message == server.error
    assert server.spawner_state is None
    assert not (home / "root").exists()  # the spawner never ran


def test_a_name_that_is_no_local_account_starts(db, home, stopper):
    # given a user name the Outpost's host has no account for (a Kubernetes-style Outpost)
    with pytest.raises(KeyError):
        pwd.getpwnam("olga")
    server = new_server(home, user_name="olga", outpost_kwargs={"min_system_uid": 1000})
    stopper.append(server.pk)
    # when
    tasks.server_start_run_task(server.pk)
    # then
    server.refresh_from_db()
    assert server.status == Server.Status.RUNNING
    assert wait_until(lambda: json_if_up(f"http://{server.address}/user/olga/"))["user"] == "olga"


def leftover_of_a_dead_attempt(home, **kwargs) -> tuple[Server, int]:
    """A pending server whose start attempt died after its spawner started a real process
    and its heartbeat saved the state; its start lease has run out."""
    server = new_server(home, **kwargs)
    runner = SpawnerRunner.for_server(server)
    asyncio.run(runner.start())
    Server.objects.filter(pk=server.pk).update(
        status=Server.Status.PENDING,
        started_at=timezone.now() - timedelta(seconds=150),
        spawner_state=runner.get_state(),
        start_lease_until=timezone.now() - timedelta(seconds=30),
    )
    server.refresh_from_db()
    return server, server.spawner_state["pid"]


def test_a_redelivered_start_leaves_an_attempt_that_holds_the_lease_alone(db, home, stopper):
    # given a start whose first attempt still runs and renews its lease (Redis redelivers a
    # task that runs longer than its visibility timeout)
    server = new_server(home)
    stopper.append(server.pk)
    Server.objects.filter(pk=server.pk).update(
        status=Server.Status.PENDING,
        started_at=timezone.now(),
        start_lease_until=timezone.now() + timedelta(minutes=1),
    )
    # when the redelivered copy runs
    tasks.server_start_run_task(server.pk)
    # then it started no second spawner
    server.refresh_from_db()
    assert server.status == Server.Status.PENDING
    assert "Starting the server." not in messages(server)
    assert not (home / "olga").exists()


def test_an_attempt_that_stalled_past_its_lease_leaves_the_server_to_the_new_owner(
    transactional_db, home, monkeypatch, killer
):
    # given a start whose spawner made a process and keeps start() pending; beats renew the
    # lease every second (instead of every 30 s) so the attempt checks its ownership often
    monkeypatch.setattr(start, "START_LEASE_RENEW_EVERY", timedelta(0))
    server = new_server(home, spawner_class="tests.support.spawners.SlowSpawner")
    thread, pid = slow_start_in_a_worker_thread(server, home)
    killer.append(pid)
    # when another attempt takes the server over (this one looked dead: its lease ran out)
    new_owner = {"lease": timezone.now() + timedelta(minutes=5), "state": {"pid": 1}}
    Server.objects.filter(pk=server.pk).update(
        start_lease_until=new_owner["lease"], spawner_state=new_owner["state"]
    )
    thread.join(timeout=30)
    # then the stalled attempt stopped what it made and left the new owner's record alone
    assert not thread.is_alive()
    assert not alive(pid)
    server.refresh_from_db()
    assert server.status == Server.Status.PENDING
    assert (server.start_lease_until, server.spawner_state) == (
        new_owner["lease"],
        new_owner["state"],
    )


def test_a_redelivered_start_after_the_lease_ran_out_stops_the_leftover_and_starts_again(
    db, home, stopper, killer
):
    # given
    server, old_pid = leftover_of_a_dead_attempt(home)
    killer.append(old_pid)
    stopper.append(server.pk)
    # when the redelivered task runs
    tasks.server_start_run_task(server.pk)
    # then
    server.refresh_from_db()
    assert server.status == Server.Status.RUNNING
    assert not alive(old_pid)
    assert server.spawner_state["pid"] != old_pid
    assert server.start_lease_until is None
    assert wait_until(lambda: json_if_up(f"http://{server.address}/user/olga/"))["user"] == "olga"


def test_a_dead_start_with_a_stop_asked_for_is_stopped_not_started_again(db, home, killer):
    # given
    server, old_pid = leftover_of_a_dead_attempt(home)
    killer.append(old_pid)
    Server.objects.filter(pk=server.pk).update(stop_requested_at=timezone.now())
    # when the redelivered task runs
    tasks.server_start_run_task(server.pk)
    # then what the dead attempt made is stopped, and no new start was made
    server.refresh_from_db()
    assert (server.status, server.exit_code) == (Server.Status.STOPPED, 0)
    assert not alive(old_pid)
    assert "Starting the server." not in messages(server)


def _ask_for_a_stop(user_name: str) -> None:
    Server.objects.filter(user_name=user_name).update(stop_requested_at=timezone.now())


class StopAskedWhileStartingSpawner(SimpleLocalProcessSpawner):
    """A stop is asked for just before start() returns, and the system refuses stops."""

    async def start(self):
        result = await super().start()
        # The Hub's DELETE landing between the start's last check and its end.
        await sync_to_async(_ask_for_a_stop)(self.user.name)
        return result

    async def stop(self, now=False):
        raise RuntimeError("the system refuses the stop")


def test_a_start_that_must_not_stay_and_cannot_be_stopped_goes_to_the_stop_task(
    db, home, killer, monkeypatch, django_capture_on_commit_callbacks
):
    # given
    server = new_server(
        home, spawner_class="tests.outposts.test_tasks.StopAskedWhileStartingSpawner"
    )
    sent: list[tuple] = []
    monkeypatch.setattr(
        tasks.server_stop_run_task._get_current_object(),
        "apply_async",
        lambda args, queue, **kwargs: sent.append((tuple(args), queue)),
    )
    # when (its on-commit sends run by hand: a test's transaction never commits)
    with django_capture_on_commit_callbacks(execute=True):
        tasks.server_start_run_task(server.pk)
    # then the server is not left pending: it is stopping, with the state to stop it from,
    # and its stop task (which retries, then tells the administrators) is queued
    server.refresh_from_db()
    killer.append(server.spawner_state["pid"])
    assert server.status == Server.Status.STOPPING
    assert alive(server.spawner_state["pid"])
    assert sent == [((server.pk,), server.outpost.celery_queue)]


def test_a_stop_that_never_succeeds_fails_the_server_and_logs_an_error(db, caplog):
    # given
    server = ServerFactory(status=Server.Status.STOPPING, stop_requested_at=timezone.now())
    # when every retry of its stop task failed
    end.server_stop_gave_up(server_id=server.pk)
    # then
    server.refresh_from_db()
    assert server.status == Server.Status.FAILED
    assert server.error == "The server could not be stopped; ask the Outpost's administrators."
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert f"Server {server.pk} could not be stopped" in record.getMessage()


def test_tasks_tolerate_a_deleted_server(db, fake_hub, django_capture_on_commit_callbacks):
    # when
    with django_capture_on_commit_callbacks() as callbacks:
        tasks.server_start_run_task(987654)
        tasks.server_stop_run_task(987654)
        tasks.hub_event_send_task(987654)
        tasks.hub_address_send_task(987654)
        tasks.hub_flavors_send_task(987654)
        tasks.outpost_reconcile_task(987654)
    # then nothing raised, nothing was queued and no Hub was called
    assert callbacks == []
    assert fake_hub.calls == []


@pytest.fixture
def broker():
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    yield client
    client.close()


def queued(broker, queue: str) -> list[str]:
    return [json.loads(raw)["headers"]["task"] for raw in broker.lrange(queue, 0, -1)]


def test_lifecycle_tasks_go_to_the_outposts_queue_and_hub_calls_to_the_default_one(
    transactional_db, broker
):
    # given
    outpost = OutpostFactory(slug="routing-test")
    hub = HubFactory(outposts=[outpost])
    # a live worker on the queue: the start has one event to send ("Start request accepted.")
    # to a Hub that named where
    worker_heartbeat_record(queues=["outpost.routing-test"], hostname="w@host")
    broker.delete("outpost.routing-test", "celery")
    env = {
        "JUPYTERHUB_USER": "u",
        "JUPYTERHUB_USER_ID": "1",
        "JUPYTERHUB_EVENTS_URL": "http://hub.example/hub/api/users/progress/events/u",
    }
    try:
        # when
        server, _ = services.server_start(
            hub=hub, outpost=outpost, request=StartRequest(name="", env=env)
        )
        services.server_stop(server=server)
        tasks.outposts_reconcile_task()
        # then
        assert queued(broker, "outpost.routing-test") == [
            "outposts.tasks.outpost_reconcile_task",
            "outposts.tasks.server_stop_run_task",
            "outposts.tasks.server_start_run_task",
        ]
        assert queued(broker, "celery") == ["outposts.tasks.hub_event_send_task"]
    finally:
        broker.delete("outpost.routing-test", "celery")
