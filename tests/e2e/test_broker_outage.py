"""A broker outage end to end: the real web server (uvicorn), Celery worker and beat on a
private redis-server that the test stops and starts again (tests/support/redis_server.py),
the test's PostgreSQL database, and real local server processes.

Also Redis's redelivery of a task still running past its visibility timeout: the copy finds
the start lease held and does nothing (outposts/lifecycle/__init__.py)."""

from __future__ import annotations

import base64
import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
import requests

from outposts import services
from outposts.models import Outpost, Server
from outposts.services import StartRequest
from tests.factories import HUB_SECRET, FlavorFactory, HubFactory, OutpostFactory
from tests.support.portal import (
    RECONCILE_INTERVAL,
    PortalProcess,
    e2e_worker_command,
    portal_process_env,
    start_portal_process,
    stop_portal_processes,
    wait_for_web,
    wait_for_worker,
)
from tests.support.processes import alive, free_port, wait_until
from tests.support.redis_server import RedisServer, celery_app_broker
from tests.support.spawners import serve_config

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def new_outpost(home: Path, **fields) -> Outpost:
    return OutpostFactory(
        slug=f"e2e-{uuid.uuid4().hex[:8]}",
        spawner_config=serve_config(home),
        poll_interval=timedelta(seconds=2),
        **fields,
    )


@dataclass
class PortalOnBroker:
    """Web, worker and beat of the portal on one broker, and their logs."""

    url: str
    directory: Path
    env: dict[str, str]
    commands: dict[str, list[str]]
    running: dict[str, PortalProcess] = field(default_factory=dict)
    ended: list[PortalProcess] = field(default_factory=list)

    def start(self, name: str) -> None:
        generation = sum(1 for process in self.ended if process.name.startswith(name))
        process = start_portal_process(
            f"{name}-{generation}", self.commands[name], directory=self.directory, env=self.env
        )
        self.running[name] = process
        if name == "web":
            wait_for_web(process, self.url)
        elif name == "worker":
            wait_for_worker(process)

    def restart_exited(self) -> list[str]:
        """Start again what exited, as a process supervisor (systemd, runportal) would: a
        worker holding unacknowledged tasks when its Redis connection drops can exit
        ("Unrecoverable error", a kombu bug; docs/operations.md)."""
        exited = [name for name, process in self.running.items() if process.proc.poll() is not None]
        for name in exited:
            self.ended.append(self.running.pop(name))
            self.start(name)
        return exited

    def log(self, name: str) -> str:
        processes = [p for p in [*self.ended, *self.running.values()] if p.name.startswith(name)]
        return "\n".join(process.log() for process in processes)

    def processes(self) -> list[PortalProcess]:
        return [*self.running.values(), *self.ended]


@pytest.fixture
def processes_on(tmp_path, settings) -> Iterator:
    """Start the portal's processes on a given broker; all of them, and the servers they
    left, are stopped at teardown."""
    from outposts.management.commands.runportal import beat_command, web_command

    settings.SERVER_CERTS_DIR = tmp_path / "certs"
    portals: list[PortalOnBroker] = []

    def start(broker: RedisServer, queues: list[str], **env_extra: str) -> PortalOnBroker:
        env = portal_process_env(tmp_path)
        env.update(
            CELERY_BROKER_URL=broker.url(),
            PORTAL_RECONCILE_INTERVAL=str(RECONCILE_INTERVAL),
            **env_extra,
        )
        Path(env["PORTAL_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
        port = free_port()
        portal = PortalOnBroker(
            url=f"http://127.0.0.1:{port}",
            directory=tmp_path,
            env=env,
            commands={
                "web": [
                    *web_command("127.0.0.1", port, serve_static=False),
                    "--log-level",
                    "warning",
                ],
                "worker": e2e_worker_command(["celery", *queues], "outage"),
                "beat": beat_command(),
            },
        )
        portals.append(portal)
        for name in ("web", "worker", "beat"):
            portal.start(name)
        return portal

    yield start
    stop_portal_processes([process for portal in portals for process in portal.processes()])


def test_an_outage_answers_503_holds_nothing_and_heals_once_redis_is_back(
    private_redis, processes_on, fake_hub, tmp_path
):
    # given a portal on its own Redis, a flavor with room for two servers, one of them running
    outpost = new_outpost(tmp_path / "home")
    FlavorFactory(outpost=outpost, name="small", max=2)
    hub = HubFactory(outposts=[outpost])
    portal = processes_on(private_redis, [outpost.celery_queue])
    base = f"{portal.url}/outposts/{outpost.slug}/"
    auth = base64.b64encode(f"{hub.name}:{HUB_SECRET}".encode()).decode()
    headers = {"Authorization": f"Basic {auth}"}

    def call(method: str, path: str, body=None) -> requests.Response:
        return requests.request(method, base + path, json=body, headers=headers, timeout=90)

    def start(name: str, start_id: str) -> requests.Response:
        env = fake_hub.env("olga", name)
        return call(
            "POST", "services", {"name": name, "env": env, "user_options": {"start_id": start_id}}
        )

    first = start("lab", "a")
    assert first.status_code == 200 and first.json()["service"], portal.log("worker")
    pid = Server.objects.get(name="lab").spawner_state["pid"]
    connected = portal.log("worker").count("Connected to redis")
    # when Redis stops
    private_redis.stop()
    refused = start("other", "b")
    # then a start is answered 503, with when to come back, and holds no slot
    assert refused.status_code == 503, refused.text
    assert refused.headers["Retry-After"].isdigit()
    assert refused.json()["class"] == "TaskQueueUnavailable"
    # and polls, lists, flavors and events answer from the database
    poll = call("GET", "services/lab/a")
    assert (poll.status_code, poll.json()["status"]) == (200, None)
    assert [row["name"] for row in call("GET", "services/").json()] == ["lab"]
    assert call("GET", "flavors/").json()["small"]["current"] == 1
    assert call("GET", "services/lab/a/events").json()["status"] == Server.Status.RUNNING
    # and a stop is answered 503 too, the server still running meanwhile
    assert call("DELETE", "services/lab/a").status_code == 503
    assert alive(pid)

    # when Redis is back, and the worker with it: reconnected (kombu retries with back-off),
    # or restarted by a supervisor if it exited, which it can do late (docs/operations.md)
    private_redis.start()

    def worker_back() -> bool:
        portal.restart_exited()
        return portal.log("worker").count("Connected to redis") > connected

    wait_until(
        worker_back,
        timeout=120,
        what="the worker connected to Redis again",
        details=lambda: portal.log("worker")[-4000:],
    )
    # then the same start succeeds at once (the refused one held no slot of the two)
    again = start("other", "b")
    assert again.status_code == 200 and again.json()["service"], again.text
    # and the stop made during the outage is carried out by the reconciler, unasked
    wait_until(
        lambda: call("GET", "services/lab/a").json()["status"] == 0,
        timeout=60,
        what="the server stopped during the outage to end",
        details=lambda: portal.log("worker")[-4000:],
    )
    assert not alive(pid)
    assert "never reached the broker; queueing it again" in portal.log("worker")
    assert call("DELETE", "services/other/b").status_code == 200


def test_a_start_redelivered_while_it_runs_leaves_the_first_attempt_alone(
    private_redis, processes_on, fake_hub, tmp_path
):
    # given a worker on a Redis that hands out unacknowledged tasks again after 2 seconds,
    # and a start that takes a minute after its server process runs (a batch job queued)
    home = tmp_path / "home"
    outpost = new_outpost(home, spawner_class="tests.support.spawners.SlowSpawner")
    hub = HubFactory(outposts=[outpost])
    portal = processes_on(
        private_redis, [outpost.celery_queue], PORTAL_BROKER_VISIBILITY_TIMEOUT="2"
    )
    # when the start is queued
    with celery_app_broker(private_redis.url()):
        server, _ = services.server_start(
            hub=hub, outpost=outpost, request=StartRequest(name="", env=fake_hub.env("olga"))
        )
    pid_file = home / "olga" / "spawned.pid"
    pid = int(wait_until(lambda: pid_file.exists() and pid_file.read_text(), timeout=30))
    try:
        # then Redis hands the running task out again, and the copy leaves it to its owner
        wait_until(
            lambda: (
                f"Server {server.pk}: another start attempt holds the lease" in portal.log("worker")
            ),
            timeout=60,
            what="the start task to be redelivered",
            details=lambda: portal.log("worker")[-4000:],
        )
        # (the first attempt's heartbeat saves the state it runs)
        wait_until(lambda: Server.objects.get(pk=server.pk).spawner_state == {"pid": pid})
        assert Server.objects.get(pk=server.pk).status == Server.Status.PENDING
        assert int(pid_file.read_text()) == pid  # no second server process was started
        # and the first attempt still owns it: a stop cancels it and ends its process
        with celery_app_broker(private_redis.url()):
            services.server_stop(server=server)
        wait_until(lambda: Server.objects.get(pk=server.pk).status == Server.Status.STOPPED)
        wait_until(lambda: not alive(pid), timeout=15, what="the server process to end")
        assert "Traceback" not in portal.log("worker")
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
