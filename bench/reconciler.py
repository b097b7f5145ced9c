"""Reconciler: one round over N running servers of one Outpost whose spawner polls at once.

Issue 12's target: 10,000 running servers on one Outpost all polled within one 30 s interval.
For N in --sizes, the servers are bulk-created RUNNING and never polled, then one round runs
(``outposts.tasks.outpost_reconcile_task`` called in this process) and prints: wall time,
servers polled, process CPU per server (resource.getrusage, all threads), queries per server,
and whether all N were polled within RECONCILE_INTERVAL. Nothing asserts.

    .venv/bin/python bench/reconciler.py [--sizes 1000 10000]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import bench_database, private_postgres  # noqa: E402

FAKE = "bench.spawners.FastPollSpawner"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    args = parser.parse_args()
    # The fake is allow-listed for this process only, as a site allow-lists its own classes.
    os.environ["PORTAL_SPAWNER_CLASSES"] = FAKE
    with private_postgres() as pg, bench_database("bench_reconciler", pg):
        from django.conf import settings
        from django.db import connection

        from outposts import tasks
        from outposts.models import Hub, Outpost, Server

        outpost = Outpost.objects.create(slug="bench", name="Bench", spawner_class=FAKE)
        hub = Hub.objects.create(name="benchhub", callback_url_prefixes=["http://127.0.0.1:"])
        hub.outposts.add(outpost)
        print(f"load {Path('/proc/loadavg').read_text().strip()}")
        print(
            f"RECONCILE_BATCH_SIZE={settings.RECONCILE_BATCH_SIZE} "
            f"RECONCILE_INTERVAL={settings.RECONCILE_INTERVAL}"
        )
        print(
            f"{'servers':>8} {'wall s':>8} {'polled':>8} {'CPU ms/server':>14} "
            f"{'queries/server':>15} {'all in interval':>16}"
        )
        for size in args.sizes:
            Server.objects.all().delete()
            Server.objects.bulk_create(
                [
                    Server(
                        outpost=outpost,
                        hub=hub,
                        flavor=None,
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
        print(f"load {Path('/proc/loadavg').read_text().strip()}")


if __name__ == "__main__":
    main()
