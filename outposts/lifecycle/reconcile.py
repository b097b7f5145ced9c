"""The reconciler: a periodic round over each Outpost's servers, run on that Outpost's queue.

It fails starts that outlived the start timeout and their task, and starts whose attempt died
(their lease ran out), queues again stops whose task never reached the broker or was lost,
stops servers past their runtime (a batch of each a round), and polls every running server
due for a poll, a batch at a time. A server whose system cannot be asked becomes *unknown*,
and is ended only after the Outpost's grace.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audit.services import RECONCILER, audit_stop
from monitoring.logcontext import log_context
from monitoring.services import reconcile_round_observe
from outposts import dispatch, selectors
from outposts.errors import TaskQueueUnavailable
from outposts.lifecycle.end import server_mark_failed, server_mark_stopped
from outposts.lifecycle.start import server_start_orphaned, server_start_time_out
from outposts.models import Outpost, Server
from outposts.runner.spawner import SpawnerRunner, run_sync
from outposts.services import server_stop, server_stop_queue
from outposts.workers import waiting_starts_tell_absence

log = logging.getLogger(__name__)

# Longer than all retries of a stop task together (outposts.tasks.STOP_MAX_RETRIES).
STOP_TASK_LOST_AFTER = timedelta(minutes=10)
# A round polls within SPAWNER_POLL_TIMEOUT and queues its stops; only clean-ups of starts
# whose task died run inline. A round that dies holds the Outpost this long.
RECONCILE_LEASE = timedelta(minutes=5)


def outposts_reconcile() -> None:
    """Queue one round per Outpost, each on that Outpost's queue (beat calls this); tell the
    starts waiting on a queue no live worker serves (a round queued there would wait too)."""
    waiting_starts_tell_absence()
    for outpost in Outpost.objects.all():
        dispatch.queue_outpost_reconcile(outpost=outpost, expires=settings.RECONCILE_INTERVAL)


def outpost_reconcile(*, outpost_id: int) -> None:
    """One reconciler round for an Outpost, unless another round of it is running."""
    lease = _reconcile_lease_take(outpost_id)
    if lease is None:
        log.info("Outpost %s: another reconciler round is running; skipping", outpost_id)
        return
    started = time.monotonic()
    try:
        outpost = Outpost.objects.get(pk=outpost_id)
        _reconcile(outpost)
        reconcile_round_observe(outpost=outpost, seconds=time.monotonic() - started)
    finally:
        # Only our own lease: one that ran out may already be another round's.
        Outpost.objects.filter(pk=outpost_id, reconcile_lease_until=lease).update(
            reconcile_lease_until=None
        )


def _reconcile_lease_take(outpost_id: int) -> datetime | None:
    """Own the Outpost's reconciler round until the returned time; None if another round
    does. Rounds are queued every RECONCILE_INTERVAL and workers run several tasks at once,
    so without it two rounds could poll, stop or fail the same servers twice."""
    now = timezone.now()
    until = now + RECONCILE_LEASE
    taken = (
        Outpost.objects.filter(pk=outpost_id)
        .filter(Q(reconcile_lease_until__isnull=True) | Q(reconcile_lease_until__lt=now))
        .update(reconcile_lease_until=until)
    )
    return until if taken else None


def _reconcile(outpost: Outpost) -> None:
    batch = settings.RECONCILE_BATCH_SIZE
    # A live start task enforces the timeout itself; give it one round to do so.
    grace = timedelta(seconds=settings.RECONCILE_INTERVAL)
    for server_id in selectors.starts_past_timeout(outpost=outpost, grace=grace, limit=batch):
        server_start_time_out(server_id=server_id)
    for server_id in selectors.starts_orphaned(outpost=outpost, limit=batch):
        log.warning("The start of server %s lost its worker (its lease ran out)", server_id)
        server_start_orphaned(server_id=server_id)

    try:
        _reconcile_stops(outpost, batch)
    except TaskQueueUnavailable as error:
        # Every stop still to queue keeps its mark or its age: the next round queues it.
        log.warning("Outpost %s: %s", outpost.pk, error)

    _poll_due_servers(outpost, chunk=batch)


def _poll_due_servers(outpost: Outpost, *, chunk: int) -> None:
    """Poll every server due for a poll (the Outpost's poll interval sets how often), oldest
    first, ``chunk`` at a time: one chunk's spawners are in memory at once, and their polls
    run together. A round starts no new chunk once it has run for RECONCILE_INTERVAL: the
    next round goes on with the servers polled longest ago."""
    stop_at = time.monotonic() + settings.RECONCILE_INTERVAL
    polled: set[int] = set()
    while time.monotonic() < stop_at:
        servers = [
            server
            for server in selectors.servers_due_for_poll(outpost=outpost, limit=chunk)
            # One poll per server a round: with a short poll interval a polled server is due
            # again before the round ends.
            if server.pk not in polled
        ]
        if not servers:
            return
        _poll_servers(servers)
        polled.update(server.pk for server in servers)


def _poll_servers(servers: list[Server]) -> None:
    runners: dict[int, SpawnerRunner] = {}
    results: dict[int, Any] = {}
    start_ids: dict[int, str] = {}
    for server in servers:
        start_ids[server.pk] = server.start_id
        try:
            runners[server.pk] = SpawnerRunner.for_server(server)
        except Exception as error:
            log.exception("Cannot build the spawner of server %s to poll it", server.pk)
            results[server.pk] = error
    if runners:
        results.update(run_sync(_poll_all, runners, settings.SPAWNER_POLL_TIMEOUT))
    # Most polls find the server running: one UPDATE for all of them, not one per server.
    running = [server_id for server_id, result in results.items() if result is None]
    _servers_polled_running(server_ids=running)
    for server_id, result in results.items():
        if result is None:
            continue
        # What a poll finds (an exit, an unknown server, its end) is logged with its start_id.
        with log_context(start_id=start_ids[server_id]):
            _server_polled(server_id=server_id, result=result)


def _reconcile_stops(outpost: Outpost, batch: int) -> None:
    """Queue the stops whose task never reached the broker or was lost, and those of servers
    past their runtime; raises TaskQueueUnavailable when the broker is down."""
    for server in selectors.stops_unqueued(outpost=outpost, limit=batch):
        log.warning("The stop of server %s never reached the broker; queueing it again", server.pk)
        server_stop_queue(server=server)

    for server in selectors.stops_lost(
        outpost=outpost, lost_after=STOP_TASK_LOST_AFTER, limit=batch
    ):
        _stop_requeue(server)

    for server in selectors.servers_past_runtime(outpost=outpost, limit=batch):
        log.info("Server %s reached the end of its runtime; stopping it", server.pk)
        status_before = server.status
        try:
            server = server_stop(server=server)
        finally:
            # Also when its task could not be queued: the stop is recorded and will happen.
            server.refresh_from_db()
            audit_stop(
                server=server,
                actor=RECONCILER,
                reason="Reached the end of its runtime",
                status_before=status_before,
            )


def _stop_requeue(server: Server) -> None:
    """Queue a lost stop again, once: stop_requested_at moves on, so the next rounds wait
    another STOP_TASK_LOST_AFTER for this stop task before they call it lost."""
    now = timezone.now()
    bumped = Server.objects.filter(
        pk=server.pk, status=Server.Status.STOPPING, stop_requested_at=server.stop_requested_at
    ).update(stop_requested_at=now, updated_at=now)
    if bumped:
        log.warning("The stop of server %s never finished; queueing it again", server.pk)
        server_stop_queue(server=server)


async def _poll_all(runners: dict[int, SpawnerRunner], timeout: float) -> dict[int, Any]:
    """Poll many servers at once, each within ``timeout``; exceptions are returned."""

    async def one(runner: SpawnerRunner) -> int | None:
        return await asyncio.wait_for(runner.poll(), timeout=timeout)

    ids = list(runners)
    results = await asyncio.gather(*(one(runners[i]) for i in ids), return_exceptions=True)
    return dict(zip(ids, results, strict=True))


def _server_polled(*, server_id: int, result: Any) -> None:
    """Record one poll that did not find the server running: exited (with its status), or
    unknown (``result`` is the exception). Polls that found servers running are recorded
    together (_servers_polled_running)."""
    now = timezone.now()
    if isinstance(result, BaseException):
        with transaction.atomic():
            server = selectors.server_for_update(server_id=server_id)
            if server is None or server.status not in (
                Server.Status.RUNNING,
                Server.Status.UNKNOWN,
            ):
                return
            server.status = Server.Status.UNKNOWN
            server.unknown_since = server.unknown_since or now
            server.last_poll_at = now
            server.save(update_fields=["status", "unknown_since", "last_poll_at", "updated_at"])
            expired = now - server.unknown_since >= server.outpost.unknown_grace
        log.warning("Cannot poll server %s: %r", server_id, result)
        if expired:
            log.warning("Server %s unknown for longer than its grace; ending it", server_id)
            ended = server_mark_failed(
                server_id=server_id,
                error="The Outpost lost contact with the server's system and ended it.",
            )
            _audit_end(
                ended, before=server.status, reason="Unknown for longer than the Outpost's grace"
            )
        return
    log.info("Server %s exited with status %s", server_id, result)
    before = Server.objects.filter(pk=server_id).values_list("status", flat=True).first()
    ended = server_mark_stopped(server_id=server_id, exit_code=int(result))
    _audit_end(ended, before=before, reason=f"Exited with status {int(result)}")


def _servers_polled_running(*, server_ids: list[int]) -> None:
    """Record polls that found these servers running (an unknown one is running again),
    unless they ended meanwhile."""
    if not server_ids:
        return
    now = timezone.now()
    Server.objects.filter(
        pk__in=server_ids, status__in=[Server.Status.RUNNING, Server.Status.UNKNOWN]
    ).update(status=Server.Status.RUNNING, last_poll_at=now, unknown_since=None, updated_at=now)


def _audit_end(server: Server | None, *, before: str | None, reason: str) -> None:
    # The end services also answer a server that had already ended (a stop won the race):
    # only an end this round made is the reconciler's.
    if server is not None and before is not None and server.status != before:
        audit_stop(server=server, actor=RECONCILER, reason=reason, status_before=before)
