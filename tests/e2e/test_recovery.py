"""A start whose worker dies mid-start: a real Celery worker is SIGKILLed while its spawner
has started a server process and start() has not returned (as a batch job still queued)."""

from __future__ import annotations

import os
import signal
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from outposts import services, tasks
from outposts.lifecycle.start import START_ATTEMPT_DIED
from outposts.models import Server
from outposts.services import StartRequest
from tests.factories import HubFactory, OutpostFactory
from tests.support.processes import alive, wait_until
from tests.support.spawners import serve_config

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def dead_start(celery_worker, fake_hub, tmp_path, settings):
    """A pending start whose worker was killed, and the pid of the process it left behind."""
    settings.SERVER_CERTS_DIR = tmp_path / "certs"
    home = tmp_path / "home"
    outpost = OutpostFactory(
        slug=f"e2e-{uuid.uuid4().hex[:8]}",
        spawner_class="tests.support.spawners.SlowSpawner",
        spawner_config=serve_config(home),
    )
    hub = HubFactory(outposts=[outpost])
    worker = celery_worker(outpost.celery_queue)
    server, _ = services.server_start(
        hub=hub, outpost=outpost, request=StartRequest(name="", env=fake_hub.env("olga"))
    )
    pid_file = home / "olga" / "spawned.pid"
    pids: list[int] = []
    try:
        pids.append(int(wait_until(lambda: pid_file.exists() and pid_file.read_text())))
        # the start's heartbeat saved the spawner's state while start() is still under way
        saved = wait_until(lambda: Server.objects.get(pk=server.pk).spawner_state, timeout=10)
        assert saved == {"pid": pids[0]}
        os.killpg(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait(timeout=10)
        server.refresh_from_db()
        assert server.status == Server.Status.PENDING
        assert alive(pids[0])  # in its own session: the worker's death left it running
        yield server, pids, pid_file, celery_worker
    finally:
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def lease_runs_out(server: Server, *, started_ago: timedelta = timedelta(0)) -> None:
    """Let the time pass that a dead attempt's lease (and maybe the start timeout) needs."""
    Server.objects.filter(pk=server.pk).update(
        started_at=timezone.now() - started_ago,
        start_lease_until=timezone.now() - timedelta(seconds=1),
    )


def test_the_reconciler_stops_what_a_dead_start_left_after_the_start_timeout(dead_start):
    # given
    server, (pid,), _, _ = dead_start
    lease_runs_out(server, started_ago=server.outpost.start_timeout + timedelta(minutes=5))
    # when
    tasks.outpost_reconcile_task(server.outpost_id)
    # then
    server.refresh_from_db()
    assert server.status == Server.Status.FAILED
    assert "did not start within 10 minutes" in server.error
    assert not alive(pid)


def test_the_reconciler_ends_a_dead_start_once_its_lease_runs_out_whatever_its_timeout(
    dead_start,
):
    # given a dead start (its lease ran out: START_LEASE, 2 minutes, after its last
    # heartbeat) on an Outpost whose starts may take a day, as a Slurm queue can
    server, (pid,), _, _ = dead_start
    server.outpost.start_timeout = timedelta(days=1)
    server.outpost.save()
    lease_runs_out(server)
    # when the reconciler's next round runs (no redelivery: the broker lost the task)
    tasks.outpost_reconcile_task(server.outpost_id)
    # then the row is consistent: ended failed, saying why, and what it left is stopped
    server.refresh_from_db()
    assert (server.status, server.error) == (Server.Status.FAILED, START_ATTEMPT_DIED)
    assert (server.start_lease_until, server.spawner_state) == (None, None)
    assert not alive(pid)
    # and a redelivery of the dead attempt's task, arriving later, leaves it so
    tasks.server_start_run_task(server.pk)
    server.refresh_from_db()
    assert server.status == Server.Status.FAILED


def test_a_redelivered_start_stops_what_the_dead_attempt_left_and_starts_again(dead_start):
    # given
    server, pids, pid_file, celery_worker = dead_start
    lease_runs_out(server)
    worker = celery_worker(server.outpost.celery_queue)
    # when the broker delivers the start task again to a new worker
    pid_file.unlink()
    tasks.server_start_run_task.apply_async(args=[server.pk], queue=server.outpost.celery_queue)
    # then what the dead attempt made is stopped, and a new server process is started
    pids.append(int(wait_until(lambda: pid_file.exists() and pid_file.read_text())))
    assert pids[1] != pids[0]
    wait_until(lambda: not alive(pids[0]), timeout=10)
    assert alive(pids[1])
    # and a stop now cancels the new start without leaving anything behind
    services.server_stop(server=server)
    wait_until(lambda: Server.objects.get(pk=server.pk).status == Server.Status.STOPPED)
    wait_until(lambda: not alive(pids[1]), timeout=10)
    assert "Traceback" not in worker.log()
