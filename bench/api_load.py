"""Load on the Hub-facing API through a real uvicorn: poll, list and flavors.

    .venv/bin/python bench/api_load.py [--servers 2000] [--requests 5000] [--workers 2]

Makes its own PostgreSQL database (dropped at the end), one Outpost, one Hub (HTTP Basic) and
``--servers`` running servers, serves portal.asgi with uvicorn on a free 127.0.0.1 port and
sends a fixed number of requests per endpoint from a pool of client threads, each stopped by a
time cap. Prints one line of figures per endpoint; see bench/README.md for what they mean.
"""

from __future__ import annotations

import argparse
import base64
import random
import time
from contextlib import ExitStack
from datetime import UTC, datetime

import requests
from harness import (
    TABLE_HEADER,
    Call,
    ConnectionSampler,
    Result,
    Uvicorn,
    bench_database,
    private_postgres,
    run_load,
    uvicorn,
)

DATABASE = "portal_bench"
SLUG = "bench"
HUB_NAME = "bench-hub"
FLAVORS = {"small": 1000, "medium": 600, "large": 400}  # name -> share of servers (of 2000)
HUB_POLL_SECONDS = 30  # a Hub polls each of its servers this often


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=2000, help="running servers (2000)")
    parser.add_argument("--requests", type=int, default=5000, help="polls and flavors (5000)")
    parser.add_argument("--list-requests", type=int, default=200, help="lists of all servers (200)")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes (2)")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads (8)")
    parser.add_argument(
        "--time-cap", type=float, default=60, help="seconds at most per endpoint (60)"
    )
    parser.add_argument(
        "--pg-server",
        help="an existing PostgreSQL server URL, e.g. postgres://postgres@127.0.0.1:5432 "
        "(default: a private throwaway cluster)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the poll order (1)")
    return parser.parse_args()


def populate(servers: int, secret: str, *, seed: int) -> list[tuple[str, str]]:
    """The Outpost, Hub, flavors and running servers; returns each server's (name, start_id)."""
    from django.utils import timezone

    from flavors.models import Flavor
    from outposts.hubs import hub_create
    from outposts.models import Outpost, Server

    outpost = Outpost.objects.create(slug=SLUG, name="Bench Outpost")
    hub = hub_create(name=HUB_NAME, secret=secret, outposts=[outpost])
    flavors = [
        Flavor.objects.create(outpost=outpost, name=name, display_name=name.title(), weight=i)
        for i, name in enumerate(FLAVORS)
    ]
    shares = list(FLAVORS.values())
    rng = random.Random(seed)
    now = timezone.now()
    rows = []
    for i in range(servers):
        # A quarter are users' default servers: the empty name, polled at services//<id>.
        name = "" if i % 4 == 0 else f"server{i}"
        user = f"user{i}"
        rows.append(
            Server(
                hub=hub,
                outpost=outpost,
                flavor=rng.choices(flavors, weights=shares)[0],
                name=name,
                start_id=f"{i:08x}",
                user_id=str(i + 1),
                user_name=user,
                status=Server.Status.RUNNING,
                address=f"10.0.{i // 250}.{i % 250}:8888",
                env={"JUPYTERHUB_USER": user, "JUPYTERHUB_API_TOKEN": f"token-{i}"},
                spawner_state={"pid": 10000 + i},
                started_at=now,
                ready_at=now,
                last_poll_at=now,
            )
        )
    Server.objects.bulk_create(rows, batch_size=500)
    return [(row.name, row.start_id) for row in rows]


def expect(status: int, response: requests.Response) -> tuple[bool, str]:
    ok = response.status_code == status
    return ok, "" if ok else f"{response.status_code} {response.text[:200]}"


Scenario = tuple[str, Call, int]  # name, one request, how many requests


def scenarios(
    args: argparse.Namespace, api: str, auth: tuple[str, str], names: list[tuple[str, str]]
) -> list[Scenario]:
    """What a Hub calls: polls of random servers, the list of all, the flavors."""
    poll_order = random.Random(args.seed).choices(names, k=args.requests)

    def poll(session: requests.Session, i: int) -> tuple[bool, str]:
        name, start_id = poll_order[i]
        response = session.get(f"{api}/services/{name}/{start_id}", auth=auth, timeout=30)
        ok, detail = expect(200, response)
        if ok and response.json() != {"status": None, "logs": []}:
            return False, f"unexpected poll answer {response.text[:200]}"
        return ok, detail

    def listing(session: requests.Session, i: int) -> tuple[bool, str]:
        response = session.get(f"{api}/services/", auth=auth, timeout=60)
        ok, detail = expect(200, response)
        if ok and len(response.json()) != args.servers:
            return False, f"listed {len(response.json())} servers, not {args.servers}"
        return ok, detail

    def flavors(session: requests.Session, i: int) -> tuple[bool, str]:
        response = session.get(f"{api}/flavors/", auth=auth, timeout=30)
        ok, detail = expect(200, response)
        if ok and sum(f["current"] for f in response.json().values()) != args.servers:
            return False, f"flavor counts do not add up: {response.text[:200]}"
        return ok, detail

    return [
        ("poll", poll, args.requests),
        ("list", listing, args.list_requests),
        ("flavors", flavors, args.requests),
    ]


def main() -> None:
    args = parse_args()
    secret = base64.urlsafe_b64encode(random.randbytes(32)).decode()
    with ExitStack() as stack:
        pg_server = args.pg_server or stack.enter_context(private_postgres())
        env = stack.enter_context(bench_database(DATABASE, pg_server))
        began = time.perf_counter()
        names = populate(args.servers, secret, seed=args.seed)
        print(f"{args.servers} running servers made in {time.perf_counter() - began:.1f}s")
        ping = f"/outposts/{SLUG}/ping"
        with uvicorn(env, workers=args.workers, ping_path=ping) as server:
            load = scenarios(args, f"{server.base}/outposts/{SLUG}", (HUB_NAME, secret), names)
            warm_up(server, load, args.concurrency * 2)
            results = []
            with ConnectionSampler(pg_server, DATABASE) as connections:
                for name, call, total in load:
                    result = run_load(
                        name,
                        call,
                        total=total,
                        concurrency=args.concurrency,
                        time_cap=args.time_cap,
                        server=server,
                    )
                    results.append(result)
        report(args, results, connections)


def warm_up(server: Uvicorn, load: list[Scenario], calls: int) -> None:
    """A few unmeasured calls of each kind, so every worker has imported and connected."""
    for name, call, _ in load:
        run_load(f"warm-{name}", call, total=calls, concurrency=4, time_cap=30, server=server)


def report(args: argparse.Namespace, results: list[Result], db: ConnectionSampler) -> None:
    print()
    print(
        f"API load, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {args.servers} running servers, "
        f"{args.workers} uvicorn workers, {args.concurrency} client threads"
    )
    print(TABLE_HEADER)
    for result in results:
        print(result.row())
    for result in results:
        for sample in result.error_samples:
            print(f"  {result.name} error: {sample}")
    poll = results[0]
    print()
    print(
        f"Polls: {poll.rate:.0f}/s, enough for ~{poll.rate * HUB_POLL_SECONDS:,.0f} servers "
        f"polled every {HUB_POLL_SECONDS} s (client and server share this machine's CPUs)."
    )
    measured = sum(result.requests for result in results)
    print(
        f"PostgreSQL: at most {db.peak} connections at once; {db.sessions} sessions opened "
        f"for {measured} measured requests."
    )


if __name__ == "__main__":
    main()
