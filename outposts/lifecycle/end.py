"""How servers end: stopped through their spawner, or ended as stopped or failed.

Every end tells the Hub the new flavor counts; a failure also becomes a failed progress event.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from outposts import callbacks, services
from outposts.errors import SpawnerFailed
from outposts.models import Server
from outposts.runner.logtail import SpawnerLogTail, tail_joined
from outposts.runner.spawner import ServerSpec, SpawnerRunner, run_sync
from outposts.selectors import server_for_update
from outposts.status_events import server_status_announce
from tunnels.services import tunnel_close_for_server

log = logging.getLogger(__name__)


def lease_live(server: Server, now: datetime) -> bool:
    """Whether a start attempt still holds the server's start lease."""
    return server.start_lease_until is not None and server.start_lease_until > now


def _server_end(
    *, server_id: int, status: Server.Status, exit_code: int, error: str = ""
) -> Server | None:
    """End a server (stopped or failed); tells the Hub the new flavor counts.

    A failed server also gets a failed progress event: a Hub waiting for the start answer
    learns of the failure from it (419), a Hub that got an early answer from this event.
    """
    with transaction.atomic():
        server = server_for_update(server_id=server_id)
        if server is None or not server.is_active:
            return server
        server.status = status
        server.exit_code = exit_code
        if error:
            server.error = error
        server.stopped_at = timezone.now()
        server.spawner_state = None
        server.unknown_since = None
        server.start_lease_until = None
        server.stop_unqueued_since = None
        server.save()
        server_status_announce(server_id=server.pk)
        tunnel_close_for_server(server=server)
        if status == Server.Status.FAILED:
            callbacks.server_record_event(
                server=server,
                progress=100,
                message=server.error,
                failed=True,
                forward=server.address_via_callback,
            )
        callbacks.server_flavor_counts_changed(server=server)
    return server


def server_spawner_log_add(*, server_id: int, tail: SpawnerLogTail) -> None:
    """Add what ``tail`` kept (a start's or a stop's spawner log) to the server's own tail,
    which its admin page shows; the oldest lines go first."""
    text = tail.text()
    if not text:
        return
    with transaction.atomic():
        server = server_for_update(server_id=server_id)
        if server is not None:
            Server.objects.filter(pk=server_id).update(
                spawner_log=tail_joined(server.spawner_log, text)
            )


def server_mark_failed(*, server_id: int, error: str) -> Server | None:
    """End a start as failed with a text safe for users; tells the Hub (event, flavors)."""
    return _server_end(server_id=server_id, status=Server.Status.FAILED, exit_code=1, error=error)


def server_mark_stopped(*, server_id: int, exit_code: int, error: str = "") -> Server | None:
    """End a server as stopped with ``exit_code``; tells the Hub the new flavor counts."""
    return _server_end(
        server_id=server_id, status=Server.Status.STOPPED, exit_code=exit_code, error=error
    )


def server_stop_leftover(*, server: Server, state: dict[str, Any]) -> bool:
    """Stop what an earlier, crashed attempt of a start left behind; False if that failed."""
    try:
        runner = SpawnerRunner(replace(ServerSpec.from_server(server), state=state))
        run_sync(runner.stop, now=True)
    except Exception:
        log.exception("Could not stop what an earlier start of server %s left", server.pk)
        return False
    return True


def server_stop_hand_over(*, server_id: int, state: dict[str, Any], error: str = "") -> None:
    """A start's spawner made something that must not stay, and stopping it failed.

    The server keeps that state and becomes STOPPING; the stop task retries with back-off
    and, if it gives up, fails the server and logs it for the administrators. With an
    ``error`` (a start that failed) the server ends failed with it once the stop succeeds.
    """
    with transaction.atomic():
        server = server_for_update(server_id=server_id)
        if server is None or not server.is_active:
            log.error(
                "Server %s ended meanwhile, but its spawner state %s may still run: stop it "
                "by hand",
                server_id,
                state,
            )
            return
        server.status = Server.Status.STOPPING
        server.spawner_state = state
        server.stop_requested_at = server.stop_requested_at or timezone.now()
        server.start_lease_until = None
        if error:
            server.error = error
        server.save()
        services.server_stop_queue(server=server)


def server_stop_run(*, server_id: int) -> None:
    """Stop a running (or unknown, or stopping) server through its spawner's saved state.

    A server whose start has not begun ends at once; one whose start is under way is
    cancelled by its start task, unless that task died (its lease ran out): then this task
    stops what it left. Raises SpawnerFailed when the spawner cannot stop it (the task
    retries).
    """
    with transaction.atomic():
        server = server_for_update(server_id=server_id)
        if server is None or not server.is_active:
            return
        if server.status == Server.Status.REQUESTED:
            server_mark_stopped(server_id=server_id, exit_code=0)
            return
        if server.status == Server.Status.PENDING and lease_live(server, timezone.now()):
            return  # the start task sees stop_requested_at and cancels
        if server.status != Server.Status.STOPPING:
            server.status = Server.Status.STOPPING
            server.stop_requested_at = server.stop_requested_at or timezone.now()
            server.start_lease_until = None
            server.save(
                update_fields=["status", "stop_requested_at", "start_lease_until", "updated_at"]
            )
    tail = SpawnerLogTail()
    try:
        runner = SpawnerRunner.for_server(server)
        tail = runner.log_tail
        run_sync(runner.stop)
    except Exception as error:
        log.exception("Could not stop server %s", server_id)
        tail.add_error(error, what="The stop")
        raise SpawnerFailed(f"Could not stop server {server_id}") from error
    finally:
        server_spawner_log_add(server_id=server_id, tail=tail)
    if server.error:
        # A start that failed (timed out) and handed its leftover over carries its reason: it
        # ends failed, as it would have had the leftover stopped at once (a Hub reads 1 and
        # gets the failed event, api-contract §6).
        server_mark_failed(server_id=server_id, error=server.error)
    else:
        # A stop the Hub or the runtime asked for ends normally, whatever signal it took.
        server_mark_stopped(server_id=server_id, exit_code=0)


def server_stop_gave_up(*, server_id: int) -> None:
    """Every retry of a stop failed: the server may still run on its system.

    Logged at ERROR for the Outpost's administrators (alerting hooks on the log); the
    server fails so its capacity is not held forever.
    """
    log.error(
        "Server %s could not be stopped after every retry; its job or process may still run "
        "on the Outpost's system and must be stopped by hand",
        server_id,
    )
    server_mark_failed(
        server_id=server_id,
        error="The server could not be stopped; ask the Outpost's administrators.",
    )
