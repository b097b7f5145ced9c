"""Workers next to each system: two Outposts, each with its own real worker started by
``manage.py run_outpost_worker``, and a central worker on the default queue only.

Every task published during the test is recorded (its id and the queue it went to) and then
looked for in the workers' logs: a task of an Outpost's queue must have run on that
Outpost's worker and appear in no other worker's log.
"""

from __future__ import annotations

import os
import signal
import sys
import uuid
from datetime import timedelta

import pytest
from celery.signals import before_task_publish

from outposts import dispatch
from outposts.models import Server, WorkerHeartbeat
from outposts.services import StartRequest, server_start, server_stop
from tests.factories import HubFactory, OutpostFactory
from tests.support.portal import (
    ROOT,
    Worker,
    portal_process_env,
    start_portal_process,
    stop_portal_processes,
    wait_for_worker,
)
from tests.support.processes import alive, wait_until
from tests.support.spawners import serve_config

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def published():
    """(task name, task id, queue) of every task this process publishes."""
    tasks: list[tuple[str, str, str]] = []

    def record(sender=None, headers=None, routing_key=None, **kwargs):
        tasks.append((headers["task"], headers["id"], routing_key))

    before_task_publish.connect(record, weak=False)
    yield tasks
    before_task_publish.disconnect(record)


@pytest.fixture
def outpost_workers(tmp_path):
    """Start ``run_outpost_worker SLUG`` as a real process, stamping every half second."""
    workers: list[Worker] = []
    env = {**portal_process_env(tmp_path), "PORTAL_WORKER_HEARTBEAT_INTERVAL": "0.5"}

    def start(outpost) -> Worker:
        command = [
            sys.executable,
            str(ROOT / "manage.py"),
            "run_outpost_worker",
            outpost.slug,
            "--hostname",
            f"{outpost.slug}@%h",
        ]
        worker = start_portal_process(
            f"worker-{outpost.slug}",
            command,
            directory=tmp_path,
            env=env,
            kind=Worker,
            queues=[outpost.celery_queue],
        )
        assert isinstance(worker, Worker)
        workers.append(worker)
        wait_for_worker(worker)
        return worker

    yield start
    stop_portal_processes(list(workers))


@pytest.fixture
def killer():
    yield
    for state in Server.objects.exclude(spawner_state=None).values_list("spawner_state", flat=True):
        pid = (state or {}).get("pid")
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)


def env_of(user: str) -> dict[str, str]:
    """A start's env, whose Hub takes progress events (at a port nobody listens on: the
    call-backs' tasks only need to be queued and routed)."""
    return {
        "JUPYTERHUB_USER": user,
        "JUPYTERHUB_USER_ID": str(len(user)),
        "JUPYTERHUB_EVENTS_URL": f"http://127.0.0.1:9/hub/api/users/progress/events/{user}/lab",
    }


def status_of(server: Server) -> str:
    return Server.objects.get(pk=server.pk).status


def test_each_outposts_tasks_run_on_its_own_worker_and_a_start_without_one_says_so(
    celery_worker, outpost_workers, published, killer, tmp_path, settings
):
    # given two Outposts with a worker each, a third with none, and a central worker that
    # serves the default queue only
    settings.SERVER_CERTS_DIR = tmp_path / "certs"
    tag = uuid.uuid4().hex[:6]
    alpha, beta, gamma = (
        OutpostFactory(
            slug=f"{name}-{tag}",
            name=f"{name.title()} {tag}",
            spawner_config=serve_config(tmp_path / "home"),
            start_timeout=timedelta(minutes=2),
        )
        for name in ("alpha", "beta", "gamma")
    )
    hub = HubFactory(name=f"hub-{tag}", outposts=[alpha, beta, gamma])
    central = celery_worker()
    workers = {alpha.celery_queue: outpost_workers(alpha), beta.celery_queue: outpost_workers(beta)}
    # (each worker stamps its queue as soon as it consumes)
    wait_until(
        lambda: WorkerHeartbeat.objects.filter(queue__in=list(workers)).count() == 2,
        timeout=30,
        what="both Outpost workers' stamps",
    )

    # when a user starts a server on each Outpost, each is reconciled, and both are stopped
    servers = {}
    for outpost, user in ((alpha, "ada"), (beta, "bob")):
        servers[outpost.celery_queue], _ = server_start(
            hub=hub, outpost=outpost, request=StartRequest(name="lab", env=env_of(user))
        )
    for server in servers.values():
        wait_until(lambda s=server: status_of(s) == Server.Status.RUNNING, timeout=60)
    for outpost in (alpha, beta):
        dispatch.queue_outpost_reconcile(outpost=outpost, expires=60)
    for server in servers.values():
        server_stop(server=server)
    for server in servers.values():
        wait_until(lambda s=server: status_of(s) == Server.Status.STOPPED, timeout=60)
    # and a user starts a server on the Outpost that has no worker
    waiting, _ = server_start(
        hub=hub, outpost=gamma, request=StartRequest(name="lab", env=env_of("cy"))
    )

    # then every task of an Outpost's queue ran on that Outpost's worker, and on no other
    for queue, worker in workers.items():
        own = [(name, task_id) for name, task_id, routed in published if routed == queue]
        assert {name for name, _ in own} >= {
            "outposts.tasks.server_start_run_task",
            "outposts.tasks.outpost_reconcile_task",
            "outposts.tasks.server_stop_run_task",
        }
        for _, task_id in own:
            wait_until(
                lambda w=worker, t=task_id: f"[{t}] succeeded" in w.log(),
                timeout=30,
                what=f"task {task_id} to succeed on {worker.name}",
                details=worker.log_tail,
            )
            others = [w for w in (*workers.values(), central) if w is not worker]
            assert not [w.name for w in others if task_id in w.log()]
    # and the Hub call-backs (default queue) reached neither Outpost's worker
    default_ids = [task_id for _, task_id, routed in published if routed == "celery"]
    assert default_ids
    assert not [t for t in default_ids for w in workers.values() if t in w.log()]
    # and each queue's stamp names the worker that serves it
    stamps = dict(WorkerHeartbeat.objects.values_list("queue", "hostname"))
    assert stamps[alpha.celery_queue].startswith(f"{alpha.slug}@")
    assert stamps[beta.celery_queue].startswith(f"{beta.slug}@")
    # and the start for the Outpost without a worker says so in its progress, while those
    # with a worker did not
    assert [event.message for event in waiting.events.order_by("pk")] == [
        "Start request accepted.",
        f"No worker for Outpost {gamma.name} has been seen yet; "
        f"the start waits in its queue ({gamma.celery_queue}).",
    ]
    assert status_of(waiting) == Server.Status.REQUESTED
    for server in servers.values():
        assert not [e for e in server.events.all() if e.message.startswith("No worker")]
