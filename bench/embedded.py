"""The embedded default measured: `manage.py runportal` on a fresh checkout's settings (SQLite
in a scratch PORTAL_DATA_DIR, the private Redis), or for comparison with `--broker filesystem`
(the portal's filesystem:// transport) or `--broker sql` (kombu's SQL transport on SQLite).
Prints figures; asserts nothing (bench/README.md).

Measures, with an Outpost of InstantSpawner servers (a start that takes no time of its own,
so a synchronous start's latency is all the portal's):

- idle memory of runportal and its children (PSS and RSS, per part) after a settle, the PSS
  sum against issue 12's target of 250 MiB;
- synchronous starts one at a time: latency p50 / p95 / max;
- synchronous starts four at a time: starts/s and latency;
- a burst of simultaneous synchronous starts: time to the last answer, answers not 200;
- idle memory again, with every started server left running, after another settle (a
  reconciler round), and its growth scaled to 1,000 running servers.

Everything lives in a temporary folder and runportal's session, both removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (  # noqa: E402
    BROKER_URL,
    free_port,
    percentile,
    process_cpu_seconds,
    with_machine_speed,
)

PG_SERVER = "postgres://postgres@127.0.0.1:5432"
PG_DATABASE = "portal_bench_embedded"


def postgres_database(*, create: bool) -> None:
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')
        if create:
            conn.execute(f'CREATE DATABASE "{PG_DATABASE}"')


ROOT = Path(__file__).resolve().parents[1]
HUB, SECRET = "bench-hub", "bench-hub-secret"
SECRETS = {
    "PORTAL_SECRET_KEY": "bench-only-secret-key",
    "PORTAL_CREDENTIAL_KEY": "bench-only-credential-key",
    "PORTAL_ENCRYPTION_KEYS": "doMMAYSpy4vTWjE1IhxV6yhXTVFnlisU_zoKssC77Q0=",
}


def portal_env(data: Path, broker: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "CELERY_"))}
    env.pop("PORTAL_DEBUG", None)
    env.update(SECRETS, DJANGO_SETTINGS_MODULE="portal.settings", PORTAL_DATA_DIR=str(data))
    if broker == "postgres-redis":
        # Production's parts under runportal: PostgreSQL (a database of its own on the local
        # server, made and dropped here) and the shared Redis's bench db.
        env["DATABASE_URL"] = f"{PG_SERVER}/{PG_DATABASE}"
        env["CELERY_BROKER_URL"] = BROKER_URL
    elif broker == "filesystem":
        env["CELERY_BROKER_URL"] = "filesystem://"
    elif broker == "sql":
        # kombu's SQL transport, on an SQLite file of its own (not the portal's database,
        # whose write lock every start already takes).
        env["CELERY_BROKER_URL"] = f"sqla+sqlite:///{data / 'broker.sqlite3'}"
    return env


def manage(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True)


def configure(env: dict[str, str], data: Path) -> None:
    config = {
        "outposts": [
            {
                "slug": "bench",
                "spawner_class": "tests.support.spawners.InstantSpawner",
                "spawner_config": {},
                "flavors": [{"name": "small", "display_name": "Small"}],
            }
        ],
        "hubs": [{"name": HUB, "secret": SECRET, "outposts": ["bench"]}],
    }
    (data / "bench.yaml").write_text(json.dumps(config))
    manage(env, "migrate", "-v0")
    # Before runportal runs the broker, as scripts/demo does: its flavor push has no Hub.
    # The stand-in spawner is allow-listed for this command, as a site allow-lists its own.
    allowed = {"PORTAL_SPAWNER_CLASSES": "tests.support.spawners.InstantSpawner"}
    manage(
        {**env, **allowed, "CELERY_BROKER_URL": "memory://"},
        "apply_config",
        str(data / "bench.yaml"),
    )


def session_pids(sid: int) -> dict[int, str]:
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(fields[3]) == sid:
            found[int(entry.name)] = cmdline
    return found


def part_name(cmdline: str) -> str:
    for needle, name in (
        ("uvicorn", "web"),
        ("runportal", "runportal"),
        ("portal/supervisor.py", "runportal"),
        ("redis-server", "broker"),
        ("portal worker", "worker"),
        ("portal beat", "beat"),
        ("run_tunnel_agent", "agent"),
    ):
        if needle in cmdline:
            return name
    return cmdline[:30]


def memory_kib(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of a process in KiB, from /proc/<pid>/smaps_rollup."""
    pss = rss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            pss = int(line.split()[1])
        elif line.startswith("Rss:"):
            rss = int(line.split()[1])
    return pss, rss


def print_memory(sid: int) -> int:
    """Print PSS and RSS per process of runportal's session; return the PSS sum in KiB."""
    print(f"{'part':<10} {'PSS MiB':>8} {'RSS MiB':>8}")
    total_pss = total_rss = 0
    for pid, cmdline in sorted(session_pids(sid).items()):
        pss, rss = memory_kib(pid)
        total_pss, total_rss = total_pss + pss, total_rss + rss
        print(f"{part_name(cmdline):<10} {pss / 1024:>8.1f} {rss / 1024:>8.1f}")
    print(f"{'together':<10} {total_pss / 1024:>8.1f} {total_rss / 1024:>8.1f}")
    return total_pss


def cpu_seconds_by_part(sid: int) -> Counter[str]:
    """User + system CPU seconds used so far by each part of runportal's session."""
    used: Counter[str] = Counter()
    for pid, cmdline in session_pids(sid).items():
        with contextlib.suppress(OSError):  # a part that just exited
            used[part_name(cmdline)] += process_cpu_seconds(pid)
    return used


def pss_together(sid: int) -> int:
    """The PSS sum of runportal's session in KiB, printing nothing."""
    return sum(memory_kib(pid)[0] for pid in session_pids(sid))


def start_once(client: requests.Session, base: str, number: int) -> tuple[int, float]:
    body = {
        "name": "",
        "env": {"JUPYTERHUB_USER": f"u{number}", "JUPYTERHUB_USER_ID": str(1000 + number)},
        "user_options": {"start_id": f"s{number}", "flavor": "small"},
    }
    began = time.perf_counter()
    try:
        answer = client.post(f"{base}/outposts/bench/services", json=body, timeout=120)
        code = answer.status_code if "127.0.0.1:9" in answer.text else -answer.status_code
    except requests.RequestException:
        code = 0
    return code, (time.perf_counter() - began) * 1000


def start_times(env: dict[str, str], data: Path, start_ids: list[str]) -> list[tuple[float, float]]:
    """For each of these starts, in ms: from its row's insert (the web, before the commit) to
    the worker's claim, and from the claim to its landing (the spawner and the landing)."""
    sql = "SELECT created_at, started_at, ready_at FROM outposts_server WHERE start_id IN ({})"
    if "DATABASE_URL" in env:
        import psycopg

        with psycopg.connect(env["DATABASE_URL"]) as conn:
            rows = conn.execute(sql.format(", ".join(["%s"] * len(start_ids))), start_ids)
            rows = rows.fetchall()
    else:
        import sqlite3
        from datetime import datetime

        with sqlite3.connect(data / "portal.sqlite3") as conn:
            text_rows = conn.execute(sql.format(", ".join("?" * len(start_ids))), start_ids)
            rows = [[datetime.fromisoformat(value) for value in row] for row in text_rows]
    return [
        ((started - created).total_seconds() * 1000, (ready - started).total_seconds() * 1000)
        for created, started, ready in rows
        if started and ready
    ]


def client() -> requests.Session:
    session = requests.Session()
    session.auth = (HUB, SECRET)
    return session


def latency_line(label: str, results: list[tuple[int, float]], wall: float) -> str:
    times = sorted(ms for _, ms in results)
    bad = sum(1 for code, _ in results if code != 200)
    return (
        f"{label:<22} {len(results):>5} {bad:>4} {len(results) / wall:>8.1f} "
        f"{percentile(times, 0.5):>8.0f} {percentile(times, 0.95):>8.0f} {times[-1]:>8.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--broker",
        choices=["embedded", "filesystem", "sql", "postgres-redis"],
        default="embedded",
        help="embedded (default); filesystem or sql: other brokers on SQLite; postgres-redis: "
        "PostgreSQL on 127.0.0.1:5432 and Redis db 9 instead of the embedded parts",
    )
    parser.add_argument("--sequential", type=int, default=100)
    parser.add_argument("--four-at-a-time", type=int, default=400)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--settle", type=float, default=20.0, help="seconds idle before memory")
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="bench-emb-", dir="/tmp"))
    env = portal_env(data, args.broker)
    port = free_port()
    portal = None
    if args.broker == "postgres-redis":
        postgres_database(create=True)
    try:
        configure(env, data)
        log = (data / "runportal.log").open("wb")
        portal = subprocess.Popen(
            [sys.executable, "manage.py", "runportal", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while b"ready." not in (data / "runportal.log").read_bytes():
            if time.monotonic() > deadline or portal.poll() is not None:
                raise SystemExit("runportal did not get ready; see " + str(data))
            time.sleep(0.2)
        time.sleep(args.settle)

        print(f"Embedded default, broker: {args.broker}; idle after {args.settle:g} s")
        idle_pss = print_memory(portal.pid)
        print(f"idle PSS together: {idle_pss / 1024:.1f} MiB (issue 12's target: at most 250)\n")

        print(
            f"{'sync starts':<22} {'count':>5} {'bad':>4} {'starts/s':>8} "
            f"{'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}"
        )
        one = client()
        start_once(one, base, 10**6)  # warm-up: the first start imports the spawner
        after_first = pss_together(portal.pid)
        cpu_before = cpu_seconds_by_part(portal.pid)
        began = time.perf_counter()
        results = [start_once(one, base, n) for n in range(args.sequential)]
        print(latency_line("one at a time", results, time.perf_counter() - began))
        cpu_used = cpu_seconds_by_part(portal.pid)
        cpu_used.subtract(cpu_before)
        parts = ", ".join(
            f"{part} {seconds / args.sequential * 1000:.1f}"
            for part, seconds in sorted(cpu_used.items())
            if seconds > 0
        )
        print(f"  CPU per start, in ms (PostgreSQL's not counted): {parts}")
        times = start_times(env, data, [f"s{n}" for n in range(args.sequential)])
        claimed = percentile(sorted(claim for claim, _ in times), 0.5)
        landed = percentile(sorted(land for _, land in times), 0.5)
        answered = percentile(sorted(ms for _, ms in results), 0.5)
        # Where the wait goes (medians): the rest is the web's part before the insert, the
        # commit and the publish before the claim's share, and the wake-up and answer after.
        print(
            f"  of a start's p50, in ms: insert to the worker's claim {claimed:.1f}, claim to "
            f"landing {landed:.1f}, the rest {answered - claimed - landed:.1f}"
        )

        offset = args.sequential
        sessions = threading.local()

        def four(number: int) -> tuple[int, float]:
            if not hasattr(sessions, "client"):
                sessions.client = client()
            return start_once(sessions.client, base, offset + number)

        began = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(four, range(args.four_at_a_time)))
        print(latency_line("four at a time", results, time.perf_counter() - began))

        offset += args.four_at_a_time
        barrier = threading.Barrier(args.burst + 1)
        clients = [client() for _ in range(args.burst)]
        burst: list[tuple[int, float]] = [(0, 0.0)] * args.burst

        def burst_start(index: int) -> None:
            barrier.wait()
            burst[index] = start_once(clients[index], base, offset + index)

        threads = [threading.Thread(target=burst_start, args=(i,)) for i in range(args.burst)]
        for thread in threads:
            thread.start()
        barrier.wait()
        began = time.perf_counter()
        for thread in threads:
            thread.join()
        print(latency_line(f"burst of {args.burst}", burst, time.perf_counter() - began))
        started = 1 + args.sequential + args.four_at_a_time + args.burst
        time.sleep(args.settle)  # a reconciler round (every 30 s) over the running servers
        print(f"\nAfter {started} starts (servers left running), idle {args.settle:g} s:")
        final = print_memory(portal.pid)
        grown = final - idle_pss
        print(
            f"growth: {grown / 1024:.1f} MiB for {started} running servers, "
            f"{grown / 1024 / started * 1000:.1f} MiB per 1,000"
        )
        # The first start imports the spawner's modules once: the growth per server is what
        # comes after it.
        per_server = (final - after_first) / (started - 1)
        print(
            f"of which the first start: {(after_first - idle_pss) / 1024:.1f} MiB; after it "
            f"{per_server / 1024 * 1000:.1f} MiB per 1,000 running servers"
        )
        text = (data / "runportal.log").read_text(errors="replace")
        print(
            f"\nrunportal log: {text.count('exited with code')} part exits, "
            f"{text.count('database is locked')} 'database is locked', "
            f"{text.count('Traceback')} tracebacks"
        )
    finally:
        if portal is not None and portal.poll() is None:
            portal.send_signal(signal.SIGINT)
            try:
                portal.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(portal.pid, signal.SIGKILL)
                portal.wait()
        shutil.rmtree(data, ignore_errors=True)
        if args.broker == "postgres-redis":
            postgres_database(create=False)


if __name__ == "__main__":
    with_machine_speed(main)
