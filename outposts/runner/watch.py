"""A start that gives up when a stop is asked for, its time runs out or another attempt
took it over; whatever the spawner made is then stopped again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from outposts.runner.checks import SystemAccount
from outposts.runner.spawner import AddressSource, ProgressCallback, SpawnerRunner
from outposts.runner.tls import TLSMaterial

log = logging.getLogger(__name__)

# Gets the spawner's state while a start runs; answers whether this attempt still owns it.
Heartbeat = Callable[[dict[str, Any]], Awaitable[bool]]


class StartOutcome(StrEnum):
    RUNNING = "running"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    FAILED = "failed"
    # Another attempt took the server over (this one stalled past its lease).
    SUPERSEDED = "superseded"


@dataclass
class StartResult:
    outcome: StartOutcome
    address: str = ""
    error: BaseException | None = None


async def start_watched(
    runner: SpawnerRunner,
    *,
    tls: TLSMaterial | None,
    on_progress: ProgressCallback | None,
    stop_requested: Callable[[], Awaitable[bool]],
    timeout: float,
    heartbeat: Heartbeat | None = None,
    check_every: float = 1.0,
    reported_address: AddressSource | None = None,
) -> StartResult:
    """Start, but give up when a stop is requested or ``timeout`` seconds pass.

    Every ``check_every`` seconds while the spawner starts, ``heartbeat`` gets its current
    state: a batch job or a process may exist long before start() returns, and whoever
    recovers from a crash of this worker needs that state to stop it. When the heartbeat says
    another attempt owns the server now, this one gives up. Whatever the spawner made is
    stopped again when the start does not end running. ``reported_address``: the start
    also waits for the server to report its address (SpawnerRunner.start).
    """
    try:
        runner.check_may_start()
    except SystemAccount as error:
        # Refused before the spawner did anything: nothing to clean up (a batch spawner's
        # clean-up would itself run a command as that account).
        return StartResult(outcome=StartOutcome.FAILED, error=error)
    start = asyncio.ensure_future(
        runner.start(tls=tls, on_progress=on_progress, reported_address=reported_address)
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(timeout, 0)
    outcome = None
    while not start.done():
        await asyncio.wait({start}, timeout=min(check_every, max(deadline - loop.time(), 0)))
        if start.done():
            break
        if heartbeat is not None and not await _beat(runner, heartbeat):
            outcome = StartOutcome.SUPERSEDED
        elif await stop_requested():
            outcome = StartOutcome.CANCELLED
        elif loop.time() >= deadline:
            outcome = StartOutcome.TIMED_OUT
        if outcome:
            start.cancel()
            try:
                await start
            except asyncio.CancelledError:
                log.info("Start of server %s cancelled (%s)", runner.spec.server_id, outcome)
            except Exception:
                log.exception("Start of server %s failed while cancelled", runner.spec.server_id)
            await _cleanup(runner)
            return StartResult(outcome=outcome)
    try:
        address = start.result()
    except Exception as error:  # noqa: BLE001 - any spawner error fails the start (logged there)
        await _cleanup(runner)
        return StartResult(outcome=StartOutcome.FAILED, error=error)
    return StartResult(outcome=StartOutcome.RUNNING, address=address)


async def _beat(runner: SpawnerRunner, heartbeat: Heartbeat) -> bool:
    try:
        return await heartbeat(runner.get_state())
    except Exception:
        # A database blip must not cancel a start; the next beat tries again.
        log.exception("Heartbeat of the start of server %s failed", runner.spec.server_id)
        return True


async def _cleanup(runner: SpawnerRunner) -> None:
    try:
        await runner.stop(now=True)
    except Exception:
        log.exception("Could not stop what spawner %s made", runner.spec.spawner_class)
