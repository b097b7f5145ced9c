"""Server CPU of a poll and an empty list through the lean API stack and the full middleware
stack, in one process, interleaved, so that a loaded machine weighs on both alike.

    .venv/bin/python bench/stacks.py [--requests 300] [--rounds 3]

Calls portal.asgi's router (the Hub API's lean stack) and its full-stack handler directly,
through asgiref's communicator (no HTTP server, no client in the measured CPU), and prints
CPU per request (time.process_time, every thread of this process) for each.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import random
import time
from contextlib import ExitStack

from api_load import DATABASE, EMPTY_SLUG, HUB_NAME, SLUG, populate
from asgiref.testing import ApplicationCommunicator
from harness import bench_database, private_postgres


async def get(app, path: str, auth: str) -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"authorization", auth.encode())],
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 40000),
    }
    communicator = ApplicationCommunicator(app, scope)
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(timeout=30)
    while (await communicator.receive_output(timeout=30)).get("more_body"):
        pass
    await communicator.wait(timeout=30)
    return start["status"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    secret = base64.urlsafe_b64encode(random.randbytes(32)).decode()
    auth = "Basic " + base64.b64encode(f"{HUB_NAME}:{secret}".encode()).decode()
    with ExitStack() as stack:
        stack.enter_context(bench_database(DATABASE, stack.enter_context(private_postgres())))
        name, start_id = populate(100, secret, seed=1)[1]
        from portal.asgi import application, site_application

        paths = {
            "poll": f"/outposts/{SLUG}/services/{name}/{start_id}",
            "list-empty": f"/outposts/{EMPTY_SLUG}/services/",
        }
        stacks = {"lean (API_MIDDLEWARE)": application, "full (MIDDLEWARE)": site_application}
        cpu = {(p, s): 0.0 for p in paths for s in stacks}

        async def run() -> None:
            for _ in range(args.rounds):
                for endpoint, path in paths.items():
                    for label, app in stacks.items():
                        began = time.process_time()
                        for _ in range(args.requests):
                            assert await get(app, path, auth) == 200
                        cpu[endpoint, label] += time.process_time() - began

        asyncio.run(run())
        total = args.requests * args.rounds
        for (endpoint, label), seconds in cpu.items():
            print(f"{endpoint:<11} {label:<22} {seconds / total * 1000:6.2f} ms CPU/request")


if __name__ == "__main__":
    main()
