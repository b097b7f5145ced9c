"""The embedded default under load: runportal on a fresh checkout's settings (SQLite and the
private Redis), filled with servers by synchronous starts four at a time, then a burst of
100 simultaneous starts. Every start is answered with its address, no part of the portal
exits, and nothing logs an error ("database is locked", a broken message, a traceback).

The spawner is InstantSpawner (tests/support/spawners.py): the path from the API through
admission, the broker and the worker to the database is the subject, not a server process.

Size: PORTAL_LOAD_FILL servers (default 300) before the burst. The default already runs the
burst against a filled database; `make test-all` fills the full 1,000, and bench/embedded.py
measures the big figures.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.processes import response_if_up, wait_until
from tests.support.runportal import (
    RunningPortal,
    configure_instant_outpost,
    embedded_default,
    hub_session,
    instant_start,
)

pytestmark = pytest.mark.e2e

FILL = int(os.environ.get("PORTAL_LOAD_FILL", "300"))
AT_A_TIME, BURST = 4, 100


@pytest.fixture
def loaded_portal():
    with embedded_default() as env:
        configure_instant_outpost(env)
        portal = RunningPortal(env)
        try:
            portal.wait_for_line("worker |", "ready.")
            base = f"http://127.0.0.1:{portal.port}"
            wait_until(
                lambda: response_if_up(f"{base}/outposts/load/ping"),
                timeout=60,
                what="the web server",
                details=portal.tail,
            )
            yield portal, base
        finally:
            portal.stop()


def test_the_embedded_default_answers_every_start_of_a_fill_and_a_burst(loaded_portal):
    portal, base = loaded_portal
    # given the portal on the embedded default, its parts' pids
    clients = threading.local()

    def start_in_own_session(number: int) -> tuple[int, str]:
        if not hasattr(clients, "session"):
            clients.session = hub_session()
        return instant_start(clients.session, base, number)

    # when FILL servers are started, four synchronous starts at a time
    with ThreadPoolExecutor(AT_A_TIME) as pool:
        filled = list(pool.map(start_in_own_session, range(FILL)))
    # and then 100 at once
    barrier = threading.Barrier(BURST)
    burst: list[tuple[int, str]] = [(0, "")] * BURST
    sessions = [hub_session() for _ in range(BURST)]

    def burst_start(index: int) -> None:
        barrier.wait(timeout=60)
        burst[index] = instant_start(sessions[index], base, FILL + index)

    threads = [threading.Thread(target=burst_start, args=(i,)) for i in range(BURST)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)

    # then every start was answered with its server's address
    wrong = [(n, answer) for n, answer in enumerate(filled + burst) if answer[0] != 200]
    assert not wrong, f"{len(wrong)} starts not answered 200, e.g. {wrong[:3]}\n{portal.tail()}"
    empty = [n for n, (_, text) in enumerate(filled + burst) if "127.0.0.1:9" not in text]
    assert not empty, f"{len(empty)} starts answered without an address, e.g. {empty[:3]}"
    # and the portal lists all of them as running
    listing = hub_session().get(f"{base}/outposts/load/services/", timeout=60)
    assert listing.status_code == 200
    assert len(listing.json()) == FILL + BURST
    # and no part of the portal exited or logged an error
    assert not portal.lines_of("runportal:", "exited"), portal.tail()
    for trouble in ("database is locked", "Skipped broker message", "Traceback", "ERROR"):
        assert not [line for line in portal.lines if trouble in line], trouble
