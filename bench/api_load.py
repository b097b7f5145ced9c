"""Load on the Hub-facing API through a real uvicorn: poll, list and flavors.

    .venv/bin/python bench/api_load.py [--servers 1000] [--requests 5000] [--workers 2]

Makes its own PostgreSQL database (dropped at the end), one Outpost, one Hub (HTTP Basic) and
``--servers`` running servers, serves portal.asgi with uvicorn on a free 127.0.0.1 port and
sends a fixed number of requests per endpoint from a pool of client threads, each stopped by a
time cap; then the same endpoints (and the list of an Outpost without servers) from one
client, for the latency of a single keep-alive connection. Prints one line of figures per
endpoint and client count; see bench/README.md for what they mean.
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
    sqlite_database,
    uvicorn,
    with_machine_speed,
)

DATABASE = "portal_bench"
SLUG = "bench"
EMPTY_SLUG = "bench-empty"  # an Outpost of the same Hub without servers: the empty list
HUB_NAME = "bench-hub"
FLAVORS = {"small": 1000, "medium": 600, "large": 400}  # name -> share of servers
STAFF = {"name": "olga", "groups": ["staff"]}  # a userflavors body
HUB_POLL_SECONDS = 30  # a Hub polls each of its servers this often


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=1000, help="running servers (1000)")
    parser.add_argument("--requests", type=int, default=5000, help="polls and flavors (5000)")
    parser.add_argument("--list-requests", type=int, default=200, help="lists of all servers (200)")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes (2)")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads (8)")
    parser.add_argument(
        "--single-requests",
        type=int,
        default=500,
        help="polls, empty lists and flavors from one client (500; lists: a tenth)",
    )
    parser.add_argument(
        "--time-cap", type=float, default=60, help="seconds at most per endpoint (60)"
    )
    parser.add_argument(
        "--pg-server",
        help="an existing PostgreSQL server URL, e.g. postgres://postgres@127.0.0.1:5432 "
        "(default: a private throwaway cluster)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the poll order (1)")
    parser.add_argument(
        "--database",
        choices=["postgres", "sqlite"],
        default="postgres",
        help="postgres (default), or sqlite: the embedded default's database (use --workers 1, "
        "as runportal runs one web process)",
    )
    return parser.parse_args()


def populate(servers: int, secret: str, *, seed: int) -> list[tuple[str, str]]:
    """The Outpost, Hub, flavors and running servers; returns each server's (name, start_id)."""
    from django.utils import timezone

    from flavors.models import Flavor, HubPolicy, UserRule
    from outposts.hubs import hub_create
    from outposts.models import Outpost, Server

    outpost = Outpost.objects.create(slug=SLUG, name="Bench Outpost")
    empty = Outpost.objects.create(slug=EMPTY_SLUG, name="Bench Outpost without servers")
    hub = hub_create(name=HUB_NAME, secret=secret, outposts=[outpost, empty])
    flavors = [
        Flavor.objects.create(outpost=outpost, name=name, display_name=name.title(), weight=i)
        for i, name in enumerate(FLAVORS)
    ]
    # The Hub's policies and two user rules, as a centre sets them: resolution reads them all
    # for every flavors answer (STAFF's gets two flavors).
    for flavor in flavors:
        HubPolicy.objects.create(
            outpost=outpost, hub=hub, flavor=flavor, cap=servers,
            overrides={"runtime": {"hours": 8}} if flavor.name == "large" else {},
        )  # fmt: skip
    staff = UserRule.objects.create(
        outpost=outpost, name="staff", attributes={"groups": ["staff"]}, weight=1
    )
    staff.flavors.set(flavors[:2])
    UserRule.objects.create(
        outpost=outpost, name="guests", attributes={"groups": "guest*"}, forbidden=True
    )
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


# name, one request, how many requests, how many servers each answer lists (0: not a list)
Scenario = tuple[str, Call, int, int]


def scenarios(
    args: argparse.Namespace, base: str, auth: tuple[str, str], names: list[tuple[str, str]]
) -> tuple[list[Scenario], list[Scenario]]:
    """What a Hub calls: polls of random servers, the list of all, the flavors; from many
    clients, then from one (with the list of an Outpost without servers too)."""
    api = f"{base}/outposts/{SLUG}"
    poll_order = random.Random(args.seed).choices(names, k=max(args.requests, args.single_requests))

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

    def empty_listing(session: requests.Session, i: int) -> tuple[bool, str]:
        response = session.get(f"{base}/outposts/{EMPTY_SLUG}/services/", auth=auth, timeout=30)
        ok, detail = expect(200, response)
        if ok and response.json() != []:
            return False, f"the empty Outpost listed {response.text[:200]}"
        return ok, detail

    def flavors(session: requests.Session, i: int) -> tuple[bool, str]:
        response = session.get(f"{api}/flavors/", auth=auth, timeout=30)
        ok, detail = expect(200, response)
        if ok and sum(f["current"] for f in response.json().values()) != args.servers:
            return False, f"flavor counts do not add up: {response.text[:200]}"
        return ok, detail

    def userflavors(session: requests.Session, i: int) -> tuple[bool, str]:
        response = session.post(
            f"{api}/userflavors/?user_id={i % args.servers + 1}", json=STAFF, auth=auth, timeout=30
        )
        ok, detail = expect(200, response)
        if ok and len(response.json()) != 2:
            return False, f"staff should get two flavors: {response.text[:200]}"
        return ok, detail

    single = args.single_requests
    return [
        ("poll", poll, args.requests, 0),
        ("list", listing, args.list_requests, args.servers),
        ("flavors", flavors, args.requests, 0),
        ("userflavors", userflavors, args.requests, 0),
    ], [
        ("poll", poll, single, 0),
        ("list-empty", empty_listing, single, 0),
        ("list", listing, max(1, single // 10), args.servers),
        ("flavors", flavors, single, 0),
        ("userflavors", userflavors, single, 0),
    ]


def main() -> None:
    args = parse_args()
    secret = base64.urlsafe_b64encode(random.randbytes(32)).decode()
    with ExitStack() as stack:
        if args.database == "sqlite":
            pg_server = None
            env = stack.enter_context(sqlite_database())
        else:
            pg_server = args.pg_server or stack.enter_context(private_postgres())
            env = stack.enter_context(bench_database(DATABASE, pg_server))
        began = time.perf_counter()
        names = populate(args.servers, secret, seed=args.seed)
        print(f"{args.servers} running servers made in {time.perf_counter() - began:.1f}s")
        ping = f"/outposts/{SLUG}/ping"
        with uvicorn(env, workers=args.workers, ping_path=ping) as server:
            many, one = scenarios(args, server.base, (HUB_NAME, secret), names)
            warm_up(server, many + one, args.concurrency * 2)
            with ExitStack() as sampling:
                connections = pg_server and sampling.enter_context(
                    ConnectionSampler(pg_server, DATABASE)
                )
                results = measure(server, many, concurrency=args.concurrency, args=args)
            single = measure(server, one, concurrency=1, args=args)
        report(args, results, single, connections)


def measure(
    server: Uvicorn, load: list[Scenario], *, concurrency: int, args: argparse.Namespace
) -> list[tuple[Result, int]]:
    """Each scenario in turn; its result and how many servers each of its answers lists."""
    return [
        (
            run_load(
                name,
                call,
                total=total,
                concurrency=concurrency,
                time_cap=args.time_cap,
                server=server,
            ),
            listed,
        )
        for name, call, total, listed in load
    ]


def warm_up(server: Uvicorn, load: list[Scenario], calls: int) -> None:
    """A few unmeasured calls of each kind, so every worker has imported and connected."""
    for name, call, _, _ in load:
        run_load(f"warm-{name}", call, total=calls, concurrency=4, time_cap=30, server=server)


def report(
    args: argparse.Namespace,
    results: list[tuple[Result, int]],
    single: list[tuple[Result, int]],
    db: ConnectionSampler | None,
) -> None:
    print()
    print(
        f"API load, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {args.servers} running servers, "
        f"{args.workers} uvicorn workers, {args.database}"
    )
    for title, rows in (
        (f"{args.concurrency} client threads", results),
        ("1 client (one keep-alive connection)", single),
    ):
        print(title)
        print(TABLE_HEADER)
        for result, _ in rows:
            print(result.row())
        for result, listed in rows:
            if listed:
                per_server = result.cpu_per_request() / listed * 1e6
                print(f"  {result.name}: {per_server:.1f} µs of server CPU per listed server")
        for result, _ in rows:
            for sample in result.error_samples:
                print(f"  {result.name} error: {sample}")
    poll = results[0][0]
    print()
    print(
        f"Polls: {poll.rate:.0f}/s, enough for ~{poll.rate * HUB_POLL_SECONDS:,.0f} servers "
        f"polled every {HUB_POLL_SECONDS} s (client and server share this machine's CPUs)."
    )
    if db is None:
        return
    measured = sum(result.requests for result, _ in results)
    print(
        f"PostgreSQL: at most {db.peak} connections at once; {db.sessions} sessions opened "
        f"for {measured} measured requests."
    )


if __name__ == "__main__":
    with_machine_speed(main)
