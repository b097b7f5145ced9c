"""How the Hub API's figures grow with web workers and with servers in the database.

    .venv/bin/python bench/scale_out.py [--servers 0,1000,10000] [--workers 1,2,4]
                                        [--requests 1500] [--concurrency 16]

One PostgreSQL database (a private cluster, as api_load.py), the same Outpost, Hub and
flavors as api_load.py; running servers are added between steps, so each step has the given
number in all. For each server count and each uvicorn worker count it measures, from
``--concurrency`` client threads: polls of random servers (none with 0 servers), the empty
list, the flavors, and lists of all servers (a tenth as many requests); and prints one line
each with rate, p50 and the server CPU per request (per listed server for the list). The
client runs on the same 2 cores: the rate is what is left after it, the CPU per request is
the server's own (bench/README.md, "Scale-out").
"""

from __future__ import annotations

import argparse
import base64
import random
import time
from contextlib import ExitStack

from api_load import DATABASE, EMPTY_SLUG, HUB_NAME, SLUG, expect, populate
from harness import bench_database, private_postgres, run_load, uvicorn, with_machine_speed


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="0,1000,10000", help="server counts (0,1000,10000)")
    parser.add_argument("--workers", default="1,2,4", help="uvicorn worker counts (1,2,4)")
    parser.add_argument("--requests", type=int, default=1500, help="per endpoint (1500)")
    parser.add_argument("--concurrency", type=int, default=16, help="client threads (16)")
    parser.add_argument("--pg-server", help="an existing PostgreSQL server URL")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    counts = [int(n) for n in args.servers.split(",")]
    worker_counts = [int(n) for n in args.workers.split(",")]
    secret = base64.urlsafe_b64encode(random.randbytes(32)).decode()
    auth = (HUB_NAME, secret)
    print(f"{'servers':>7} {'workers':>7} {'endpoint':<10} {'req/s':>8} {'p50 ms':>7} "
          f"{'cpu/r ms':>9} {'busy':>5}")  # fmt: skip
    with ExitStack() as stack:
        pg_server = args.pg_server or stack.enter_context(private_postgres())
        env = stack.enter_context(bench_database(DATABASE, pg_server))
        names = populate(0, secret, seed=1)  # the Outposts, Hub and flavors
        for servers in counts:
            if servers > len(names):
                names += add_servers(len(names), servers)
            for workers in worker_counts:
                with uvicorn(env, workers=workers, ping_path=f"/outposts/{SLUG}/ping") as server:
                    for name, call, total, listed in endpoints(server.base, auth, names, args):
                        run_load("warm", call, total=50, concurrency=4, time_cap=30, server=server)
                        result = run_load(
                            name,
                            call,
                            total=total,
                            concurrency=args.concurrency,
                            time_cap=60,
                            server=server,
                        )
                        cpu = result.cpu_per_request() * 1000
                        unit = (
                            f"{cpu / listed * 1000:>6.1f} µs/server" if listed else f"{cpu:>9.2f}"
                        )
                        print(
                            f"{servers:>7} {workers:>7} {name:<10} {result.rate:>8.1f} "
                            f"{result.ms(0.5):>7.1f} {unit} {result.machine_busy:>5.0%}"
                            + (f"  errors: {result.error_samples}" if result.errors else "")
                        )


def add_servers(have: int, want: int) -> list[tuple[str, str]]:
    """Running servers ``have`` .. ``want`` - 1 of the bench Hub, as populate() makes them;
    their (name, start_id)."""
    from django.utils import timezone

    from flavors.models import Flavor
    from outposts.models import Hub, Outpost, Server

    outpost = Outpost.objects.get(slug=SLUG)
    hub = Hub.objects.get(name=HUB_NAME)
    flavors = list(Flavor.objects.filter(outpost=outpost))
    now = timezone.now()
    rows = [
        Server(
            hub=hub,
            outpost=outpost,
            flavor=flavors[i % len(flavors)],
            name="" if i % 4 == 0 else f"server{i}",
            start_id=f"{i:08x}",
            user_id=str(i + 1),
            user_name=f"user{i}",
            status=Server.Status.RUNNING,
            address=f"10.0.{i // 250 % 250}.{i % 250}:8888",
            started_at=now,
            ready_at=now,
            last_poll_at=now,
        )
        for i in range(have, want)
    ]
    Server.objects.bulk_create(rows, batch_size=1000)
    return [(row.name, row.start_id) for row in rows]


def endpoints(base: str, auth: tuple[str, str], names: list[tuple[str, str]], args) -> list:
    api = f"{base}/outposts/{SLUG}"
    order = random.Random(1).choices(names, k=args.requests) if names else []

    def poll(session, i):
        name, start_id = order[i]
        return expect(200, session.get(f"{api}/services/{name}/{start_id}", auth=auth, timeout=30))

    def empty_list(session, i):
        url = f"{base}/outposts/{EMPTY_SLUG}/services/"
        return expect(200, session.get(url, auth=auth, timeout=30))

    def flavors(session, i):
        return expect(200, session.get(f"{api}/flavors/", auth=auth, timeout=30))

    def listing(session, i):
        return expect(200, session.get(f"{api}/services/", auth=auth, timeout=120))

    chosen = [("list-empty", empty_list, args.requests, 0), ("flavors", flavors, args.requests, 0)]
    if names:
        chosen.insert(0, ("poll", poll, args.requests, 0))
        chosen.append(("list", listing, max(5, args.requests // 20), len(names)))
    return chosen


if __name__ == "__main__":
    began = time.perf_counter()
    with_machine_speed(main)
    print(f"({time.perf_counter() - began:.0f} s)")
