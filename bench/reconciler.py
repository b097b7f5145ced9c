"""Reconciler: one round over N running servers of one Outpost whose spawner polls at once.

Issue 12's target: 10,000 running servers on one Outpost all polled within one 30 s interval.
For N in --sizes, the servers are bulk-created RUNNING and never polled, then one round runs
(``outposts.tasks.outpost_reconcile_task`` called in this process, then queued to a real Celery
worker on Redis serving the Outpost's queue, as beat's fan-out queues it) and prints: wall time,
servers polled, process CPU per server (resource.getrusage, all threads), queries per server,
and whether all N were polled within RECONCILE_INTERVAL. Nothing asserts.

    .venv/bin/python bench/reconciler.py [--sizes 1000 10000]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (  # noqa: E402
    ROOT,
    VENV_BIN,
    bench_database,
    machine_speed_line,
    private_postgres,
    process_cpu_seconds,
    with_machine_speed,
)

# Its poll answers None at once: a round's cost is all the portal's.
FAKE = "tests.support.spawners.InstantSpawner"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def start_worker(env: dict[str, str], queue: str) -> tuple[subprocess.Popen[bytes], Path]:
    """``celery -A portal worker`` on the Outpost's queue, as production runs it; up once it
    says it is ready."""
    log = Path(tempfile.mkstemp(prefix="bench-worker-", suffix=".log")[1])
    worker = subprocess.Popen(
        [str(VENV_BIN / "celery"), "-A", "portal", "worker", "-Q", queue, "-l", "INFO"],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while b"ready." not in log.read_bytes():
        if worker.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not start: {log.read_text()[-2000:]}")
        time.sleep(0.2)
    return worker, log


def running_servers(outpost, hub, size: int) -> None:
    """Exactly ``size`` RUNNING servers of the Outpost, never polled."""
    from outposts.models import Server

    Server.objects.all().delete()
    Server.objects.bulk_create(
        [
            Server(
                outpost=outpost,
                hub=hub,
                name=f"s{i}",
                start_id=f"start{i}",
                user_id=str(i + 1),
                user_name=f"user{i}",
                status=Server.Status.RUNNING,
                address="127.0.0.1:9",
                env={},
            )
            for i in range(size)
        ],
        batch_size=2000,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    args = parser.parse_args()
    # The fake is allow-listed for this process only, as a site allow-lists its own classes.
    os.environ["PORTAL_SPAWNER_CLASSES"] = FAKE
    with private_postgres() as pg, bench_database("bench_reconciler", pg) as env:
        from django.conf import settings
        from django.db import connection

        from outposts import dispatch, tasks
        from outposts.models import Hub, Outpost, Server

        outpost = Outpost.objects.create(slug="bench", name="Bench", spawner_class=FAKE)
        hub = Hub.objects.create(name="benchhub", callback_url_prefixes=["http://127.0.0.1:"])
        hub.outposts.add(outpost)
        print(
            f"RECONCILE_BATCH_SIZE={settings.RECONCILE_BATCH_SIZE} "
            f"RECONCILE_INTERVAL={settings.RECONCILE_INTERVAL}"
        )
        print(
            f"{'servers':>8} {'wall s':>8} {'polled':>8} {'CPU ms/server':>14} "
            f"{'queries/server':>15} {'all in interval':>16}"
        )
        for size in args.sizes:
            running_servers(outpost, hub, size)
            queries = 0

            def count(execute, sql, params, many, context):
                nonlocal queries
                queries += 1
                return execute(sql, params, many, context)

            cpu0, wall0 = cpu_seconds(), time.monotonic()
            with connection.execute_wrapper(count):
                tasks.outpost_reconcile_task(outpost.pk)
            wall, cpu = time.monotonic() - wall0, cpu_seconds() - cpu0
            polled = Server.objects.filter(last_poll_at__isnull=False).count()
            within = polled == size and wall <= settings.RECONCILE_INTERVAL
            print(
                f"{size:>8} {wall:>8.2f} {polled:>8} {cpu / max(polled, 1) * 1000:>14.3f} "
                f"{queries / max(polled, 1):>15.2f} {'yes' if within else 'no':>16}"
            )
        print(machine_speed_line("between the two rounds"))
        worker, log = start_worker(env, outpost.celery_queue)
        try:
            print("through a Celery worker (wall from queueing to the lease released):")
            for size in args.sizes:
                running_servers(outpost, hub, size)
                cpu0, wall0 = process_cpu_seconds(worker.pid), time.monotonic()
                dispatch.queue_outpost_reconcile(outpost=outpost, expires=600)
                deadline = wall0 + 300
                # The round takes the lease at its start and gives it back at its end.
                while time.monotonic() < deadline:
                    time.sleep(0.05)
                    outpost.refresh_from_db()
                    polled = Server.objects.filter(last_poll_at__isnull=False).count()
                    if polled and outpost.reconcile_lease_until is None:
                        break
                wall = time.monotonic() - wall0
                cpu = process_cpu_seconds(worker.pid) - cpu0
                within = polled == size and wall <= settings.RECONCILE_INTERVAL
                print(
                    f"{size:>8} {wall:>8.2f} {polled:>8} "
                    f"{cpu / max(polled, 1) * 1000:>14.3f} {'-':>15} "
                    f"{'yes' if within else 'no':>16}"
                )
        finally:
            worker.terminate()
            worker.wait(timeout=30)
            log.unlink(missing_ok=True)


if __name__ == "__main__":
    with_machine_speed(main)
