"""The worker side of a start: claim the server, run the spawner under a lease, land it.

A start goes requested -> pending -> running, or failed, or stopped if cancelled. Its
attempt owns the server while it holds the start lease (outposts/lifecycle/__init__.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from asgiref.sync import sync_to_async
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from monitoring.services import start_ready_observe
from outposts import callbacks, dispatch
from outposts.errors import PortalError
from outposts.lifecycle.end import (
    lease_live,
    server_mark_failed,
    server_mark_stopped,
    server_spawner_log_add,
    server_stop_hand_over,
    server_stop_leftover,
)
from outposts.models import Server
from outposts.runner.checks import SystemAccount, UnsafeName
from outposts.runner.logtail import SpawnerLogTail
from outposts.runner.spawner import SpawnerRunner, run_sync
from outposts.runner.tls import TLSMaterial
from outposts.runner.watch import StartOutcome, start_watched
from outposts.selectors import server_for_update, server_unwanted
from outposts.status_events import server_status_announce
from tunnels.reports import server_report_env, server_reported_address
from tunnels.services import TunnelError, tunnel_open_for_server

log = logging.getLogger(__name__)


# How long a start attempt owns a pending server without a heartbeat, and how often a live
# attempt renews it. Short enough that a crashed worker's start is taken over soon, long
# enough for a clean-up stop between two heartbeats.
START_LEASE = timedelta(minutes=2)
START_LEASE_RENEW_EVERY = timedelta(seconds=30)


def user_safe_error(error: BaseException) -> str:
    """A failure text a user may see: spawner internals (paths, hosts) stay in the log."""
    if isinstance(error, PortalError | UnsafeName | SystemAccount):
        return str(error.args[0]) if error.args else error.__class__.__name__
    return (
        f"The server could not be started ({error.__class__.__name__}); the Outpost's "
        "administrators find why on its page."
    )


@dataclass(frozen=True)
class _StartClaim:
    server: Server
    # The spawner state an earlier attempt that died left: stop it before anything else.
    leftover: dict[str, Any] | None
    # A stop was asked for while that attempt ran: end the server instead of starting.
    cancelled: bool
    # The lease this attempt took: whoever holds the row's current lease owns the start.
    lease: datetime


def _timed_out_error(server: Server) -> str:
    minutes = server.outpost.start_timeout.total_seconds() / 60
    if server.outpost.server_reports_address and not server.reported_address:
        return (
            f"The server did not report its address within {minutes:g} minutes: it must run "
            "through outpost-start-server and reach the portal from its node."
        )
    return f"The server did not start within {minutes:g} minutes."


def _start_claim(server_id: int) -> _StartClaim | None:
    """Claim a start and its lease; None when there is nothing for this task to do."""
    with transaction.atomic():
        server = server_for_update(server_id=server_id)
        if server is None:
            log.info("Server %s is gone; nothing to start", server_id)
            return None
        if server.status not in (Server.Status.REQUESTED, Server.Status.PENDING):
            return None  # already started, stopped or failed: a redelivered task
        now = timezone.now()
        if lease_live(server, now):
            # A redelivered copy of a task whose first attempt is still alive (Redis
            # redelivers what runs past its visibility timeout), or the reconciler ending it.
            log.info("Server %s: another start attempt holds the lease; leaving it", server.pk)
            return None
        if server.status == Server.Status.REQUESTED and server.stop_requested_at is not None:
            server_mark_stopped(server_id=server.pk, exit_code=0)
            return None
        leftover = None
        if server.status == Server.Status.PENDING:
            log.warning("Server %s was pending: an earlier start attempt died", server.pk)
            leftover = server.spawner_state
        server.status = Server.Status.PENDING
        server.started_at = server.started_at or now
        server.start_lease_until = now + START_LEASE
        server.save(update_fields=["status", "started_at", "start_lease_until", "updated_at"])
    return _StartClaim(
        server=server,
        leftover=leftover,
        cancelled=server.stop_requested_at is not None,
        lease=server.start_lease_until,
    )


class _StartOwnership:
    """A start attempt's hold on its pending server, kept alive by the watch loop's beats.

    Each beat saves the spawner's state when it changed (a job id or pid exists long before
    start() returns) and renews the lease every START_LEASE_RENEW_EVERY, both only while the
    row still holds the lease this attempt last wrote: an attempt that stalled past its lease
    learns that another one took over, and must neither overwrite the new owner's state nor
    go on starting.
    """

    def __init__(self, claim: _StartClaim) -> None:
        self.server_id = claim.server.pk
        self.lease = claim.lease
        self._state = claim.server.spawner_state
        self._renewed_at = timezone.now()

    def beat(self, state: dict[str, Any]) -> bool:
        """Save ``state`` and renew the lease as due; False once this attempt lost the server."""
        now = timezone.now()
        fields: dict[str, Any] = {}
        if state != self._state:
            fields["spawner_state"] = state
        if now - self._renewed_at >= START_LEASE_RENEW_EVERY:
            fields["start_lease_until"] = now + START_LEASE
        if not fields:
            return True
        owned = Server.objects.filter(
            pk=self.server_id, status=Server.Status.PENDING, start_lease_until=self.lease
        ).update(**fields, updated_at=now)
        if not owned:
            log.warning("Server %s: another attempt took the start over", self.server_id)
            return False
        self._state = state
        if "start_lease_until" in fields:
            self.lease, self._renewed_at = fields["start_lease_until"], now
        return True

    def holds(self) -> bool:
        """Whether the server still carries this attempt's lease (no one took it over)."""
        return Server.objects.filter(pk=self.server_id, start_lease_until=self.lease).exists()


class _Landing(StrEnum):
    RUNNING = "running"
    # A stop was asked for, or someone ended the server meanwhile.
    UNWANTED = "unwanted"
    # Another attempt owns the server now: what this one made is its own to clean up.
    SUPERSEDED = "superseded"
    # It runs, but cannot be tunnelled (its address is not host:port, no tunnel port left).
    UNREACHABLE = "unreachable"


def _start_succeeded(
    *, server_id: int, address: str, state: dict[str, Any], ownership: _StartOwnership
) -> _Landing:
    """Record a server as running, if this attempt still owns it and it is still wanted."""
    with transaction.atomic():
        server = server_for_update(server_id=server_id)
        if server is None or server.status != Server.Status.PENDING:
            return _Landing.UNWANTED
        if server.start_lease_until != ownership.lease:
            return _Landing.SUPERSEDED
        if server.stop_requested_at is not None:
            return _Landing.UNWANTED
        try:
            # What the Hub is given: the tunnel agent's address if the Outpost needs one.
            hub_address = tunnel_open_for_server(server=server, address=address)
        except TunnelError as error:
            log.warning("Server %s cannot be tunnelled: %s", server_id, error)
            server.error = str(error)
            server.save(update_fields=["error", "updated_at"])
            return _Landing.UNREACHABLE
        now = timezone.now()
        server.status = Server.Status.RUNNING
        server.address = hub_address
        server.ready_at = now
        server.last_poll_at = now
        server.spawner_state = state
        server.start_lease_until = None
        server.end_at = now + server.runtime if server.runtime else None
        landed = [
            "status",
            "address",
            "ready_at",
            "last_poll_at",
            "spawner_state",
            "start_lease_until",
            "end_at",
            "updated_at",
        ]
        if server.address_via_callback and server.address_sent_at is None:
            server.address_sent_at = now
            landed.append("address_sent_at")
            dispatch.queue_hub_address_send(server_id=server.pk)
        server.save(update_fields=landed)
        server_status_announce(server_id=server.pk)
        start_ready_observe(server=server)
        callbacks.server_record_event(
            server=server, progress=100, message="Server ready.", ready=True
        )
        callbacks.server_flavor_counts_changed(server=server)
    return _Landing.RUNNING


def server_start_run(*, server_id: int, tls_token: str | None = None) -> None:
    """Run a start: requested -> pending -> running, or failed, or stopped if cancelled.

    Progress steps become SpawnEvents forwarded to the Hub. A stop asked for meanwhile
    cancels the start and stops whatever the spawner made; so does the Outpost's start
    timeout. Spawner errors fail the start with a text safe for users; the traceback is
    logged. A copy of this task finding the start owned by a live attempt does nothing;
    one finding it left by a dead attempt stops what that attempt made, then starts again
    (or ends the server, if a stop was asked for).
    """
    claim = _start_claim(server_id)
    if claim is None:
        return
    server = claim.server
    if claim.leftover and not server_stop_leftover(server=server, state=claim.leftover):
        server_stop_hand_over(server_id=server_id, state=claim.leftover)
        return
    if claim.cancelled:
        log.info("Start of server %s cancelled by a stop", server_id)
        server_mark_stopped(server_id=server_id, exit_code=0)
        return
    reported_address = None
    try:
        portal_env = None
        if server.outpost.server_reports_address:
            # A token for this attempt's server only; it lands where its wrapper reports.
            portal_env = server_report_env(server=server, lease=claim.lease)
            reported_address = sync_to_async(
                lambda: server_reported_address(server_id=server_id), thread_sensitive=True
            )
        runner = SpawnerRunner.for_server(server, portal_env=portal_env)
        tls = TLSMaterial.from_token(tls_token)
    except Exception as error:
        log.exception("Cannot build the spawner of server %s", server_id)
        tail = SpawnerLogTail()
        tail.add_error(error, what="Building the spawner")
        server_spawner_log_add(server_id=server_id, tail=tail)
        server_mark_failed(server_id=server_id, error=user_safe_error(error))
        return
    callbacks.server_record_event(server=server, progress=20, message="Starting the server.")
    elapsed = timezone.now() - (server.started_at or timezone.now())
    timeout = (server.outpost.start_timeout - elapsed).total_seconds()
    ownership = _StartOwnership(claim)
    try:
        _start_watch_and_land(runner, server, tls, reported_address, timeout, ownership)
    finally:
        # What the spawner logged while it started (and stopped), for the server's page.
        server_spawner_log_add(server_id=server_id, tail=runner.log_tail)


def _start_watch_and_land(
    runner: SpawnerRunner,
    server: Server,
    tls: TLSMaterial | None,
    reported_address: Any,
    timeout: float,
    ownership: _StartOwnership,
) -> None:
    """Run the spawner's start under ``ownership``, then land the server as it ended."""
    server_id = server.pk

    def record_progress(progress: int, message: str) -> None:
        callbacks.server_record_event(
            server=server, progress=max(20, min(progress, 99)), message=message
        )

    result = run_sync(
        start_watched,
        runner,
        tls=tls,
        on_progress=sync_to_async(record_progress),
        stop_requested=sync_to_async(lambda: server_unwanted(server_id=server_id)),
        heartbeat=sync_to_async(ownership.beat),
        timeout=timeout,
        reported_address=reported_address,
    )
    if result.outcome == StartOutcome.RUNNING:
        _start_land(runner, result.address, ownership)
    elif result.outcome == StartOutcome.SUPERSEDED or not ownership.holds():
        # What this attempt made is stopped (start_watched did); the server is not its own.
        log.warning("Start attempt of server %s ended: another attempt owns it", server_id)
    elif result.outcome == StartOutcome.CANCELLED:
        log.info("Start of server %s cancelled by a stop", server_id)
        server_mark_stopped(server_id=server_id, exit_code=0)
    elif result.outcome == StartOutcome.TIMED_OUT:
        server.refresh_from_db(fields=["reported_address"])
        server_mark_failed(server_id=server_id, error=_timed_out_error(server))
    else:
        log.error("Start of server %s failed", server_id, exc_info=result.error)
        assert result.error is not None
        runner.log_tail.add_error(result.error, what="The start")
        server_mark_failed(server_id=server_id, error=user_safe_error(result.error))


def _start_land(runner: SpawnerRunner, address: str, ownership: _StartOwnership) -> None:
    """A spawner's start returned: record the server running, or stop what it made."""
    server_id = ownership.server_id
    state = runner.get_state()
    landing = _start_succeeded(
        server_id=server_id, address=address, state=state, ownership=ownership
    )
    if landing == _Landing.RUNNING:
        log.info("Server %s is running at %s", server_id, address)
        return
    # Unwanted or not this attempt's: what it made must not stay.
    log.info("Server %s started, but %s; stopping what this attempt made", server_id, landing)
    try:
        run_sync(runner.stop, now=True)
    except Exception:
        log.exception("Could not stop server %s after its start; handing over", server_id)
        if landing in (_Landing.UNWANTED, _Landing.UNREACHABLE):
            server_stop_hand_over(server_id=server_id, state=state)
        return
    if landing == _Landing.UNWANTED:
        server_mark_stopped(server_id=server_id, exit_code=0)
    elif landing == _Landing.UNREACHABLE:
        server = Server.objects.filter(pk=server_id).only("error").first()
        server_mark_failed(server_id=server_id, error=server.error if server else "Unreachable.")


def _start_take_over(server_id: int) -> Server | None:
    """Take the start lease of a start whose task is gone; None if someone else holds it.

    One conditional UPDATE: of a redelivered start task and the reconciler, one wins.
    """
    now = timezone.now()
    taken = (
        Server.objects.filter(
            pk=server_id, status__in=[Server.Status.REQUESTED, Server.Status.PENDING]
        )
        .filter(Q(start_lease_until__isnull=True) | Q(start_lease_until__lt=now))
        .update(start_lease_until=now + START_LEASE, updated_at=now)
    )
    if not taken:
        return None
    return Server.objects.select_related("outpost", "flavor", "hub").get(pk=server_id)


def server_start_time_out(*, server_id: int) -> None:
    """Fail a start whose task is gone (the reconciler found it past its timeout), stopping
    first what it left behind."""
    _start_fail_taken_over(server_id, error_for=_timed_out_error)


# Why a start whose attempt died ends failed rather than starting again: its internal-SSL
# material travelled only in the dead attempt's task, and the Hub can start it anew.
START_ATTEMPT_DIED = (
    "The worker running this start stopped before the server was ready; start it again."
)


def server_start_orphaned(*, server_id: int) -> None:
    """Fail a pending start whose attempt died (its lease ran out: no heartbeat for
    START_LEASE), whatever its start timeout, stopping first what it left behind. The
    reconciler calls it; a live attempt renews its lease, so it is never taken from one."""
    _start_fail_taken_over(server_id, error_for=lambda server: START_ATTEMPT_DIED)


def _start_fail_taken_over(server_id: int, *, error_for: Callable[[Server], str]) -> None:
    server = _start_take_over(server_id)
    if server is None:
        return
    error = error_for(server)
    if server.spawner_state and not server_stop_leftover(server=server, state=server.spawner_state):
        server_stop_hand_over(server_id=server.pk, state=server.spawner_state, error=error)
        return
    server_mark_failed(server_id=server.pk, error=error)
