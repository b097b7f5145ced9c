"""Where a poll's, a list's, the flavors' and userflavors' time goes: py-spy samples one uvicorn
worker while one client repeats the request.

    .venv/bin/python bench/profile_api.py [--servers 1000] [--seconds 15] [--out DIR]

Same set-up as api_load.py (its own PostgreSQL, Outpost, Hub and running servers), but one
uvicorn worker, so that every sample is of the one process serving the requests. Writes
py-spy's raw stacks per endpoint to DIR (folded: one stack and its sample count a line, for
flamegraph.pl or speedscope) and prints the share of samples in each part of the stack.
Needs py-spy (requirements/dev.txt) and the right to ptrace the worker (root, or
kernel.yama.ptrace_scope 0).
"""

from __future__ import annotations

import argparse
import base64
import random
import subprocess
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import requests
from api_load import DATABASE, HUB_NAME, SLUG, STAFF, populate
from harness import VENV_BIN, bench_database, private_postgres, uvicorn

# Parts of a stack: a frame's function name starts with the first, its file path holds the
# second (py-spy prints a frame as "function (path:line)").
PARTS = {
    "thread hops (asgiref sync_to_async / async_to_sync)": ("", "asgiref/sync.py"),
    "Django's middleware (MiddlewareMixin)": ("", "django/utils/deprecation.py"),
    "the direct answers (outposts/api/direct/)": ("", "outposts/api/direct/"),
    "Hub authentication": ("", "outposts/api/authentication.py"),
    "the body validated (DRF serializers and fields)": ("run_validation", "rest_framework/"),
    "flavors resolved (policies, user rules)": ("", "flavors/resolution.py"),
    "ORM: SQL compiled": ("as_sql", "django/db/models/sql/compiler.py"),
    "ORM: rows built (from_db, iterators)": ("from_db", "django/db/models/base.py"),
    "psycopg (query sent, answer read)": ("", "psycopg/"),
    "DRF (request, negotiation, response)": ("", "rest_framework/"),
    "answer serialised (our serializers)": ("", "api/serializers.py"),
    "JSON rendered": ("", "rest_framework/renderers.py"),
    "uvicorn and its HTTP parser": ("", "uvicorn/"),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=1000, help="running servers (1000)")
    parser.add_argument("--seconds", type=float, default=15, help="sampled per endpoint (15)")
    parser.add_argument("--out", type=Path, help="folder for the raw stacks (a temp folder)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="portal-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    secret = base64.urlsafe_b64encode(random.randbytes(32)).decode()
    with ExitStack() as stack:
        env = stack.enter_context(bench_database(DATABASE, stack.enter_context(private_postgres())))
        names = populate(args.servers, secret, seed=1)
        api = f"/outposts/{SLUG}"
        name, start_id = names[1]
        # endpoint: (path, the JSON body of a POST or None for a GET), as api_load.py sends
        endpoints = {
            "poll": (f"{api}/services/{name}/{start_id}", None),
            "list": (f"{api}/services/", None),
            "flavors": (f"{api}/flavors/", None),
            "userflavors": (f"{api}/userflavors/?user_id=1", STAFF),
        }
        with uvicorn(env, workers=1, ping_path=f"{api}/ping") as server:
            worker = server.pids()[-1]
            for endpoint, (path, body) in endpoints.items():
                stacks = out / f"{endpoint}.txt"
                url, auth = server.base + path, (HUB_NAME, secret)
                count = sample(url, body, auth, worker, stacks, args.seconds)
                print(f"\n{endpoint}: {count} requests while sampled; {stacks}")
                for part, share in shares(stacks).items():
                    print(f"  {share:6.1%}  {part}")


def sample(
    url: str, body: object, auth: tuple[str, str], pid: int, stacks: Path, seconds: float
) -> int:
    """Requests from one client for ``seconds`` while py-spy samples ``pid``: GETs, or POSTs
    of ``body`` when there is one."""
    stop = threading.Event()
    count = 0

    def client() -> None:
        nonlocal count
        with requests.Session() as session:
            while not stop.is_set():
                if body is None:
                    answer = session.get(url, auth=auth, timeout=60)
                else:
                    answer = session.post(url, json=body, auth=auth, timeout=60)
                answer.raise_for_status()
                count += 1

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    time.sleep(1)  # warm
    spy = [str(VENV_BIN / "py-spy"), "record", "-p", str(pid), "-d", str(int(seconds))]
    subprocess.run(
        [*spy, "-r", "250", "-f", "raw", "-o", str(stacks)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stop.set()
    thread.join(timeout=60)
    return count


def shares(stacks: Path) -> dict[str, float]:
    """The share of samples whose stack has a frame of each part (parts overlap)."""
    rows = []
    for line in stacks.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if samples.isdigit():
            rows.append((stack, int(samples)))
    total = sum(samples for _, samples in rows) or 1
    return {
        part: sum(
            samples
            for stack, samples in rows
            if any(f.startswith(function) and path in f for f in stack.split(";"))
        )
        / total
        for part, (function, path) in PARTS.items()
    }


if __name__ == "__main__":
    main()
