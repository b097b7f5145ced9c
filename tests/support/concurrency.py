"""Many starts at the same moment, each on a database connection of its own: the runner of
the admission concurrency tests (tests/flavors/test_admission_concurrency.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db import connections

from outposts.errors import StartRefused
from outposts.services import StartRequest, server_start

if TYPE_CHECKING:
    from outposts.models import Hub, Outpost

# PostgreSQL here allows 100 connections, shared with other test runs: at most this many
# threads hold one at once. They still race: each admission is a transaction competing for
# the same rows, so without the lock in server_start they would overbook.
CONNECTIONS = 30


@dataclass(frozen=True)
class Outcome:
    """What one start got: its server's id, or the refusal's message, or the error it
    crashed with (so a crash cannot pass as a refusal)."""

    server_id: int | None = None
    refusal: str | None = None
    error: str | None = None


def starts_at_once(
    *,
    outpost: Outpost,
    starts: Sequence[tuple[Hub, StartRequest]],
    connections_at_once: int = CONNECTIONS,
    within: float = 120.0,
) -> list[Outcome]:
    """Run every start of ``starts`` (Hub, request) through server_start in a thread of its
    own, all set off together; the outcomes in the order of ``starts``.

    The rows the starts read must be committed (a ``transaction=True`` test). Raises
    AssertionError if they have not all ended ``within`` seconds.
    """
    gate = threading.Barrier(len(starts), timeout=within)
    slots = threading.BoundedSemaphore(connections_at_once)
    outcomes: list[Outcome | None] = [None] * len(starts)

    def start(index: int, hub: Hub, request: StartRequest) -> None:
        try:
            gate.wait()
            with slots:
                try:
                    server, _ = server_start(hub=hub, outpost=outpost, request=request)
                    outcomes[index] = Outcome(server_id=server.pk)
                except StartRefused as refusal:
                    outcomes[index] = Outcome(refusal=refusal.message)
                finally:
                    connections.close_all()
        except BaseException as error:
            outcomes[index] = Outcome(error=repr(error))

    threads = [
        threading.Thread(target=start, args=(index, hub, request), daemon=True)
        for index, (hub, request) in enumerate(starts)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + within
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    running = sum(thread.is_alive() for thread in threads)
    assert running == 0, f"{running} of {len(starts)} starts still running after {within} s"
    # Every thread that ended set its outcome.
    return [outcome or Outcome(error="no outcome") for outcome in outcomes]
