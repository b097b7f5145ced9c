"""Writes on Outposts, Hubs and servers. Views, admin, commands and tasks call these."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from flavors.selectors import flavor_list_for_hub
from flavors.services import flavor_admit
from outposts import hubcalls
from outposts.errors import PortalError, SpawnerFailed, StartRefused
from outposts.models import Hub, HubAPIKey, Outpost, Server, SpawnEvent
from outposts.runner import (
    ServerSpec,
    SpawnerRunner,
    StartOutcome,
    SystemAccount,
    TLSMaterial,
    UnsafeName,
    start_watched,
)
from outposts.selectors import servers_due_for_poll
from portal.crypto import credential_digest, encrypt_text, new_credential

T = TypeVar("T")

API_KEY_USE_PRECISION = timedelta(minutes=1)
# Longer than all retries of a stop task together (outposts.tasks.STOP_MAX_RETRIES).
STOP_TASK_LOST_AFTER = timedelta(minutes=10)
# A reconciler round polls within SPAWNER_POLL_TIMEOUT and queues its stops; only clean-ups
# of starts whose task died run inline. A round that dies holds the Outpost this long.
RECONCILE_LEASE = timedelta(minutes=5)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StartRequest:
    """What a Hub may decide about a start; everything else in its request is ignored."""

    name: str
    start_id: str = "0"
    env: dict[str, str] = field(default_factory=dict)
    user_options: dict[str, Any] = field(default_factory=dict)
    misc: dict[str, Any] = field(default_factory=dict)
    flavor: str | None = None
    authentication: dict[str, Any] = field(default_factory=dict)
    # execution-type: async. The Hub then gets "" as the address and waits for a set-up-tunnel
    # call, which the start task makes once the server runs.
    start_async: bool = False
    # Internal-SSL PEM contents: never stored, carried to the start task encrypted.
    certs: dict[str, str] = field(default_factory=dict, repr=False)
    internal_trust_bundles: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def user_id(self) -> str:
        return self.env.get("JUPYTERHUB_USER_ID", "")

    @property
    def user_name(self) -> str:
        return self.env.get("JUPYTERHUB_USER", "")


def _queue_task(task_name: str, outpost: Outpost, *args: Any) -> None:
    """Queue a lifecycle task on the Outpost's own queue once the transaction commits."""
    from outposts import tasks

    task = getattr(tasks, task_name)
    queue = outpost.celery_queue
    transaction.on_commit(lambda: task.apply_async(args=args, queue=queue))


def server_start(*, hub: Hub, outpost: Outpost, request: StartRequest) -> tuple[Server, bool]:
    """Admit a start and queue it; returns the server and whether it is new.

    A repeated start with the same (Hub, Outpost, name, start_id) returns the existing server.
    Only the misc and user_options keys the Outpost allow-lists are kept: batch spawners fill
    their job script from user_options, so any other key could set memory, partition or
    prologue lines past the flavors. Raises StartRefused when the Outpost does not accept
    starts or admission says no. The start task is queued after commit.
    """
    with transaction.atomic():
        # Locking the Outpost row serialises admissions on it: counts cannot interleave.
        outpost = Outpost.objects.select_for_update().get(pk=outpost.pk)
        existing = (
            Server.objects.visible()
            .filter(hub=hub, outpost=outpost, name=request.name, start_id=request.start_id)
            .first()
        )
        if existing is not None:
            return existing, False
        if not outpost.accepts_starts:
            raise StartRefused(
                f"{request.name} - Outpost {outpost.slug} is {outpost.state} and accepts no starts."
            )
        flavor = flavor_admit(
            hub=hub,
            outpost=outpost,
            flavor_name=request.flavor,
            server_name=request.name,
            user_id=request.user_id,
        )
        allowed = set(outpost.allowed_overrides)
        # flavor and project were admission's inputs; a spawner sees them only if listed.
        allowed_options = set(outpost.allowed_user_options)
        server = Server.objects.create(
            hub=hub,
            outpost=outpost,
            flavor=flavor,
            name=request.name,
            start_id=request.start_id,
            user_id=request.user_id,
            user_name=request.user_name,
            user_options={
                key: value for key, value in request.user_options.items() if key in allowed_options
            },
            overrides={key: value for key, value in request.misc.items() if key in allowed},
            env=request.env,
            # An async start's Hub waits for a set-up-tunnel call, if it named where to
            # make it (our hubclient follows the events endpoint instead).
            address_via_callback=request.start_async
            and bool(request.env.get("JUPYTERHUB_SETUPTUNNEL_URL")),
        )
        server_record_event(server=server, progress=10, message="Start request accepted.")
        tls = {"certs": request.certs, "internal_trust_bundles": request.internal_trust_bundles}
        _queue_task("server_start_task", outpost, server.pk, encrypt_text(json.dumps(tls)))
    return server, True


def server_stop(*, server: Server) -> Server:
    """Ask for a server to stop and queue its stop task; idempotent.

    A server still starting is cancelled: the start task sees stop_requested_at and the stop
    task ends whatever the spawner already made (batch job, pod, process).
    """
    with transaction.atomic():
        server = Server.objects.select_for_update().get(pk=server.pk)
        if not server.is_active:
            return server
        if server.stop_requested_at is None:
            server.stop_requested_at = timezone.now()
            # A start in progress keeps its status: its task owns the spawner and cancels.
            if server.status in (Server.Status.RUNNING, Server.Status.UNKNOWN):
                server.status = Server.Status.STOPPING
            server.save(update_fields=["stop_requested_at", "status", "updated_at"])
            _queue_task("server_stop_task", server.outpost, server.pk)
    return server


def server_remove(*, server: Server) -> Server:
    """The Hub deletes a server: stop it if needed, and hide it from the API from now on."""
    server = server_stop(server=server)
    Server.objects.filter(pk=server.pk, removed_at__isnull=True).update(removed_at=timezone.now())
    server.refresh_from_db()
    return server


def server_record_event(
    *,
    server: Server,
    progress: int,
    message: str,
    failed: bool = False,
    ready: bool = False,
    forward: bool = True,
) -> SpawnEvent:
    """Store a progress step and (unless ``forward`` is off) send it to the Hub after commit.

    Forwarding runs as its own task on the default queue, so a Hub that is slow or down never
    fails a start.
    """
    from outposts import tasks

    event = SpawnEvent.objects.create(
        server=server, progress=progress, message=message, failed=failed, ready=ready
    )
    if forward:
        transaction.on_commit(lambda: tasks.hub_forward_event.delay(event.pk))
    return event


def hub_create(*, name: str, secret: str, outposts: list[Outpost] | None = None) -> Hub:
    hub = Hub(name=name)
    hub.set_secret(secret)
    hub.full_clean()
    hub.save()
    if outposts:
        hub.outposts.set(outposts)
    return hub


def hub_api_key_create(
    *, hub: Hub, name: str = "", expires_at: Any = None
) -> tuple[HubAPIKey, str]:
    """A new API key for ``hub``; the key itself is returned once and never stored."""
    key = new_credential(prefix="op_")
    api_key = HubAPIKey.objects.create(
        hub=hub, name=name, expires_at=expires_at, key_digest=credential_digest(key)
    )
    return api_key, key


def hub_api_key_record_use(*, api_key: HubAPIKey) -> None:
    """Note when a key was last used, at most once a minute: Hubs call every few seconds."""
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at >= API_KEY_USE_PRECISION:
        HubAPIKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now


# --- Lifecycle: what the tasks in outposts/tasks.py run -------------------------------------
#
# Ownership rules that make every task safe to run twice (acks_late redelivers a crashed
# worker's task, and Redis redelivers a task still running past its visibility timeout): a
# server in REQUESTED belongs to nobody yet; the start task claims it by moving it to PENDING
# and taking its start lease, and from then on owns the spawner until it is RUNNING or ended.
# While it runs it renews the lease and saves the spawner's state (its heartbeat), so another
# copy of the task, or the reconciler, takes a PENDING server over only once the lease has
# run out (the owner died) and can stop what the owner left from the saved state. The stop
# task and the reconciler act on RUNNING, UNKNOWN and STOPPING servers. A stop asked for while
# PENDING is carried out by the start task (it watches stop_requested_at). Every transition
# re-reads the row under a lock and does nothing if someone else got there first.

# How long a start attempt owns a pending server without a heartbeat, and how often a live
# attempt renews it. Short enough that a crashed worker's start is taken over soon, long
# enough for a clean-up stop between two heartbeats.
START_LEASE = timedelta(minutes=2)
START_LEASE_RENEW_EVERY = timedelta(seconds=30)


def _locked(server_id: int) -> Server | None:
    return (
        Server.objects.select_for_update(of=("self",))
        .select_related("outpost", "flavor", "hub")
        .filter(pk=server_id)
        .first()
    )


def _queue_hub_call(task_name: str, server_id: int) -> None:
    """Hub call-backs run on the default queue: any worker can make them."""
    from outposts import tasks

    task = getattr(tasks, task_name)
    transaction.on_commit(lambda: task.delay(server_id))


def _user_safe_error(error: BaseException) -> str:
    """A failure text a user may see: spawner internals (paths, hosts) stay in the log."""
    if isinstance(error, PortalError | UnsafeName | SystemAccount):
        return str(error.args[0]) if error.args else error.__class__.__name__
    return f"The server could not be started ({error.__class__.__name__}); see the Outpost log."


def _run(coroutine_function: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    # async_to_sync runs the loop in its own thread and keeps this thread free for the
    # sync_to_async callbacks, so database writes from progress events use this thread's
    # connection, never one inside the event loop.
    return async_to_sync(coroutine_function)(*args, **kwargs)


def _server_end(
    *, server_id: int, status: Server.Status, exit_code: int, error: str = ""
) -> Server | None:
    """End a server (stopped or failed); tells the Hub the new flavor counts.

    A failed server also gets a failed progress event: a Hub waiting for the start answer
    learns of the failure from it (419), a Hub that got an early answer from this event.
    """
    with transaction.atomic():
        server = _locked(server_id)
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
        server.save()
        if status == Server.Status.FAILED:
            server_record_event(
                server=server,
                progress=100,
                message=server.error,
                failed=True,
                forward=server.address_via_callback,
            )
        _queue_hub_call("hub_flavor_update", server.pk)
    return server


def server_mark_failed(*, server_id: int, error: str) -> Server | None:
    """End a start as failed with a text safe for users; tells the Hub (event, flavors)."""
    return _server_end(server_id=server_id, status=Server.Status.FAILED, exit_code=1, error=error)


def server_mark_stopped(*, server_id: int, exit_code: int, error: str = "") -> Server | None:
    """End a server as stopped with ``exit_code``; tells the Hub the new flavor counts."""
    return _server_end(
        server_id=server_id, status=Server.Status.STOPPED, exit_code=exit_code, error=error
    )


def server_address_deferred(*, server: Server) -> Server:
    """A synchronous start answered the Hub without an address (its wait ran out).

    The Hub now waits for a set-up-tunnel call: it is queued at once if the server is
    already running, otherwise the start task makes it when the server is running.
    """
    with transaction.atomic():
        locked = _locked(server.pk)
        if locked is None:
            return server
        locked.address_via_callback = True
        if locked.status == Server.Status.RUNNING and locked.address_sent_at is None:
            locked.address_sent_at = timezone.now()
            _queue_hub_call("hub_setup_tunnel", locked.pk)
        locked.save(update_fields=["address_via_callback", "address_sent_at", "updated_at"])
    return locked


def _lease_live(server: Server, now: datetime) -> bool:
    return server.start_lease_until is not None and server.start_lease_until > now


@dataclass(frozen=True)
class _StartClaim:
    server: Server
    # The spawner state an earlier attempt that died left: stop it before anything else.
    leftover: dict[str, Any] | None
    # A stop was asked for while that attempt ran: end the server instead of starting.
    cancelled: bool
    # The lease this attempt took: whoever holds the row's current lease owns the start.
    lease: datetime


def _start_claim(server_id: int) -> _StartClaim | None:
    """Claim a start and its lease; None when there is nothing for this task to do."""
    with transaction.atomic():
        server = _locked(server_id)
        if server is None:
            log.info("Server %s is gone; nothing to start", server_id)
            return None
        if server.status not in (Server.Status.REQUESTED, Server.Status.PENDING):
            return None  # already started, stopped or failed: a redelivered task
        now = timezone.now()
        if _lease_live(server, now):
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


def _start_succeeded(
    *, server_id: int, address: str, state: dict[str, Any], ownership: _StartOwnership
) -> _Landing:
    """Record a server as running, if this attempt still owns it and it is still wanted."""
    with transaction.atomic():
        server = _locked(server_id)
        if server is None or server.status != Server.Status.PENDING:
            return _Landing.UNWANTED
        if server.start_lease_until != ownership.lease:
            return _Landing.SUPERSEDED
        if server.stop_requested_at is not None:
            return _Landing.UNWANTED
        now = timezone.now()
        server.status = Server.Status.RUNNING
        server.address = address
        server.ready_at = now
        server.last_poll_at = now
        server.spawner_state = state
        server.start_lease_until = None
        runtime = server.flavor.runtime if server.flavor is not None else None
        server.end_at = now + runtime if runtime else None
        if server.address_via_callback and server.address_sent_at is None:
            server.address_sent_at = now
            _queue_hub_call("hub_setup_tunnel", server.pk)
        server.save()
        server_record_event(server=server, progress=100, message="Server ready.", ready=True)
        _queue_hub_call("hub_flavor_update", server.pk)
    return _Landing.RUNNING


def _stop_requested(server_id: int) -> bool:
    server = Server.objects.filter(pk=server_id).only("status", "stop_requested_at").first()
    return server is None or server.stop_requested_at is not None or not server.is_active


def _stop_leftover(server: Server, state: dict[str, Any]) -> bool:
    """Stop what an earlier, crashed attempt of a start left behind; False if that failed."""
    try:
        runner = SpawnerRunner(replace(ServerSpec.from_server(server), state=state))
        _run(runner.stop, now=True)
    except Exception:
        log.exception("Could not stop what an earlier start of server %s left", server.pk)
        return False
    return True


def _hand_over_to_stop_task(*, server_id: int, state: dict[str, Any], error: str = "") -> None:
    """A start's spawner made something that must not stay, and stopping it failed.

    The server keeps that state and becomes STOPPING; the stop task retries with back-off
    and, if it gives up, fails the server and logs it for the administrators.
    """
    with transaction.atomic():
        server = _locked(server_id)
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
        _queue_task("server_stop_task", server.outpost, server.pk)


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
    if claim.leftover and not _stop_leftover(server, claim.leftover):
        _hand_over_to_stop_task(server_id=server_id, state=claim.leftover)
        return
    if claim.cancelled:
        log.info("Start of server %s cancelled by a stop", server_id)
        server_mark_stopped(server_id=server_id, exit_code=0)
        return
    try:
        runner = SpawnerRunner.for_server(server)
        tls = TLSMaterial.from_token(tls_token)
    except Exception as error:
        log.exception("Cannot build the spawner of server %s", server_id)
        server_mark_failed(server_id=server_id, error=_user_safe_error(error))
        return
    server_record_event(server=server, progress=20, message="Starting the server.")

    def record_progress(progress: int, message: str) -> None:
        server_record_event(server=server, progress=max(20, min(progress, 99)), message=message)

    elapsed = timezone.now() - (server.started_at or timezone.now())
    timeout = (server.outpost.start_timeout - elapsed).total_seconds()
    ownership = _StartOwnership(claim)
    result = _run(
        start_watched,
        runner,
        tls=tls,
        on_progress=sync_to_async(record_progress),
        stop_requested=sync_to_async(lambda: _stop_requested(server_id)),
        heartbeat=sync_to_async(ownership.beat),
        timeout=timeout,
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
        minutes = server.outpost.start_timeout.total_seconds() / 60
        server_mark_failed(
            server_id=server_id, error=f"The server did not start within {minutes:g} minutes."
        )
    else:
        log.error("Start of server %s failed", server_id, exc_info=result.error)
        assert result.error is not None
        server_mark_failed(server_id=server_id, error=_user_safe_error(result.error))


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
        _run(runner.stop, now=True)
    except Exception:
        log.exception("Could not stop server %s after its start; handing over", server_id)
        if landing == _Landing.UNWANTED:
            _hand_over_to_stop_task(server_id=server_id, state=state)
        return
    if landing == _Landing.UNWANTED:
        server_mark_stopped(server_id=server_id, exit_code=0)


def server_stop_run(*, server_id: int) -> None:
    """Stop a running (or unknown, or stopping) server through its spawner's saved state.

    A server whose start has not begun ends at once; one whose start is under way is
    cancelled by its start task, unless that task died (its lease ran out): then this task
    stops what it left. Raises SpawnerFailed when the spawner cannot stop it (the task
    retries).
    """
    with transaction.atomic():
        server = _locked(server_id)
        if server is None or not server.is_active:
            return
        if server.status == Server.Status.REQUESTED:
            server_mark_stopped(server_id=server_id, exit_code=0)
            return
        if server.status == Server.Status.PENDING and _lease_live(server, timezone.now()):
            return  # the start task sees stop_requested_at and cancels
        if server.status != Server.Status.STOPPING:
            server.status = Server.Status.STOPPING
            server.stop_requested_at = server.stop_requested_at or timezone.now()
            server.start_lease_until = None
            server.save(
                update_fields=["status", "stop_requested_at", "start_lease_until", "updated_at"]
            )
    try:
        runner = SpawnerRunner.for_server(server)
        _run(runner.stop)
    except Exception as error:
        log.exception("Could not stop server %s", server_id)
        raise SpawnerFailed(f"Could not stop server {server_id}") from error
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


# --- Calls to Hubs: what the hub_* tasks run (api-contract §6) ------------------------------
#
# The Hub names the URLs in each start request's env. Calling them as given would let a Hub
# (or whoever holds its credentials) make the portal POST to any host the portal can reach:
# only URLs under the Hub's admin-set prefixes are called. They raise HubUnreachable for the
# task to retry; a Hub that refuses is only logged.


def hub_callback_url(*, server: Server, env_key: str) -> str | None:
    """The URL the Hub gave under ``env_key`` if the portal may call it, else None (logged)."""
    url = (server.env or {}).get(env_key)
    if not url:
        return None
    if not server.hub.allows_callback(url):
        log.warning(
            "Server %s: %s %r is not under Hub %s's callback prefixes; not calling it",
            server.pk,
            env_key,
            url,
            server.hub.name,
        )
        return None
    return url


def hub_event_send(*, event_id: int) -> None:
    """POST a progress event to the Hub's events URL."""
    event = SpawnEvent.objects.select_related("server__hub").filter(pk=event_id).first()
    if event is None:
        return
    url = hub_callback_url(server=event.server, env_key="JUPYTERHUB_EVENTS_URL")
    if url is None:
        return
    try:
        hubcalls.send_event(
            url=url,
            token=(event.server.env or {}).get("JUPYTERHUB_API_TOKEN", ""),
            progress=event.progress,
            message=event.message,
            failed=event.failed,
        )
    except hubcalls.HubRefused as error:
        log.warning("Hub refused event %s of server %s: %s", event.pk, event.server_id, error)


def hub_address_send(*, server_id: int) -> None:
    """Tell a Hub that got no address in its start answer where the server listens."""
    server = Server.objects.select_related("hub").filter(pk=server_id).first()
    if server is None or server.status != Server.Status.RUNNING or not server.address:
        return
    if not (server.env or {}).get("JUPYTERHUB_SETUPTUNNEL_URL"):
        log.warning("Server %s: the Hub waits for its address but sent no set-up URL", server_id)
        return
    url = hub_callback_url(server=server, env_key="JUPYTERHUB_SETUPTUNNEL_URL")
    if url is None:
        return
    try:
        hubcalls.send_setup_tunnel(
            url=url,
            token=(server.env or {}).get("JUPYTERHUB_API_TOKEN", ""),
            address=server.address,
        )
    except hubcalls.HubRefused as error:
        log.warning("Hub refused the address of server %s: %s", server_id, error)


def hub_flavors_send(*, server_id: int) -> None:
    """Send a Hub its flavors with current counts, after a server started or ended."""
    server = Server.objects.select_related("hub", "outpost").filter(pk=server_id).first()
    if server is None:
        return
    token = (server.env or {}).get(
        "JUPYTERHUB_FLAVORS_UPDATE_TOKEN"
    ) or server.hub.flavors_update_token
    if not token:
        return
    url = hub_callback_url(server=server, env_key="JUPYTERHUB_FLAVORS_UPDATE_URL")
    if url is None:
        return
    try:
        hubcalls.send_flavor_update(
            url=url,
            token=str(token),
            flavors=flavor_list_for_hub(hub=server.hub, outpost=server.outpost),
        )
    except hubcalls.HubRefused as error:
        log.warning("Hub %s refused a flavor update: %s", server.hub.name, error)


# --- Reconciler ------------------------------------------------------------------------------


async def _poll_all(runners: dict[int, SpawnerRunner], timeout: float) -> dict[int, Any]:
    """Poll many servers at once, each within ``timeout``; exceptions are returned."""

    async def one(runner: SpawnerRunner) -> int | None:
        return await asyncio.wait_for(runner.poll(), timeout=timeout)

    ids = list(runners)
    results = await asyncio.gather(*(one(runners[i]) for i in ids), return_exceptions=True)
    return dict(zip(ids, results, strict=True))


def _server_polled(*, server_id: int, result: Any) -> None:
    """Record one poll: running, exited (with its status), or unknown."""
    now = timezone.now()
    if isinstance(result, BaseException):
        with transaction.atomic():
            server = _locked(server_id)
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
            server_mark_failed(
                server_id=server_id,
                error="The Outpost lost contact with the server's system and ended it.",
            )
        return
    if result is None:
        Server.objects.filter(
            pk=server_id, status__in=[Server.Status.RUNNING, Server.Status.UNKNOWN]
        ).update(status=Server.Status.RUNNING, last_poll_at=now, unknown_since=None, updated_at=now)
        return
    log.info("Server %s exited with status %s", server_id, result)
    server_mark_stopped(server_id=server_id, exit_code=int(result))


def _starts_past_timeout(outpost: Outpost) -> list[int]:
    now = timezone.now()
    # The start task enforces the timeout itself; this catches starts whose task is gone,
    # i.e. whose lease ran out too.
    cutoff = now - outpost.start_timeout - timedelta(seconds=settings.RECONCILE_INTERVAL)
    return list(
        Server.objects.filter(
            outpost=outpost, status__in=[Server.Status.REQUESTED, Server.Status.PENDING]
        )
        .filter(Q(started_at__lt=cutoff) | Q(started_at__isnull=True, created_at__lt=cutoff))
        .filter(Q(start_lease_until__isnull=True) | Q(start_lease_until__lt=now))
        .values_list("pk", flat=True)[: settings.RECONCILE_BATCH_SIZE]
    )


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


def _start_timed_out(*, server_id: int) -> None:
    """Fail a start whose task is gone, stopping first what it left behind."""
    server = _start_take_over(server_id)
    if server is None:
        return
    minutes = server.outpost.start_timeout.total_seconds() / 60
    error = f"The server did not start within {minutes:g} minutes."
    if server.spawner_state and not _stop_leftover(server, server.spawner_state):
        _hand_over_to_stop_task(server_id=server.pk, state=server.spawner_state, error=error)
        return
    server_mark_failed(server_id=server.pk, error=error)


def _stops_lost(outpost: Outpost) -> list[Server]:
    """Servers still stopping long after every retry of their stop task would have ended:
    that task was lost (a broker without redelivery, a purged queue)."""
    cutoff = timezone.now() - STOP_TASK_LOST_AFTER
    return list(
        Server.objects.filter(
            outpost=outpost, status=Server.Status.STOPPING, stop_requested_at__lt=cutoff
        ).order_by("stop_requested_at")[: settings.RECONCILE_BATCH_SIZE]
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
        _queue_task("server_stop_task", server.outpost, server.pk)


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


def outpost_reconcile_run(*, outpost_id: int) -> None:
    """One reconciler round for an Outpost, unless another round of it is running.

    Fails starts that outlived the start timeout and their task (stopping what they left),
    queues again stops whose task was lost, asks servers past their runtime to stop (their
    stop task stops them), polls due servers in a batch and records exits; a server whose
    system cannot be asked becomes unknown and is ended only after the Outpost's grace.
    """
    lease = _reconcile_lease_take(outpost_id)
    if lease is None:
        log.info("Outpost %s: another reconciler round is running; skipping", outpost_id)
        return
    try:
        outpost = Outpost.objects.get(pk=outpost_id)
        _reconcile(outpost)
    finally:
        # Only our own lease: one that ran out may already be another round's.
        Outpost.objects.filter(pk=outpost_id, reconcile_lease_until=lease).update(
            reconcile_lease_until=None
        )


def _reconcile(outpost: Outpost) -> None:
    for server_id in _starts_past_timeout(outpost):
        _start_timed_out(server_id=server_id)

    for server in _stops_lost(outpost):
        _stop_requeue(server)

    expired = Server.objects.filter(
        outpost=outpost,
        status__in=[Server.Status.RUNNING, Server.Status.UNKNOWN],
        end_at__lte=timezone.now(),
    )[: settings.RECONCILE_BATCH_SIZE]
    for server in expired:
        log.info("Server %s reached the end of its runtime; stopping it", server.pk)
        server_stop(server=server)

    due = list(
        servers_due_for_poll(outpost=outpost, limit=settings.RECONCILE_BATCH_SIZE).select_related(
            "outpost", "flavor"
        )
    )
    runners: dict[int, SpawnerRunner] = {}
    results: dict[int, Any] = {}
    for server in due:
        try:
            runners[server.pk] = SpawnerRunner.for_server(server)
        except Exception as error:
            log.exception("Cannot build the spawner of server %s to poll it", server.pk)
            results[server.pk] = error
    if runners:
        results.update(_run(_poll_all, runners, settings.SPAWNER_POLL_TIMEOUT))
    for server_id, result in results.items():
        _server_polled(server_id=server_id, result=result)
