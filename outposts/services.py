"""Writes on Outposts, Hubs and servers. Views, admin, commands and tasks call these."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, TypeVar

from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from flavors.services import flavor_admit
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
            address_via_callback=request.start_async,
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
# worker's task): a server in REQUESTED belongs to nobody yet; the start task claims it by
# moving it to PENDING and from then on owns the spawner until it is RUNNING or ended; the
# stop task and the reconciler act on RUNNING, UNKNOWN and STOPPING servers. A stop asked for
# while PENDING is carried out by the start task (it watches stop_requested_at). Every
# transition re-reads the row under a lock and does nothing if someone else got there first.


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


def server_mark_failed(*, server_id: int, error: str) -> Server | None:
    """End a start as failed with a text safe for users; tells the Hub (event, flavors)."""
    with transaction.atomic():
        server = _locked(server_id)
        if server is None or not server.is_active:
            return server
        server.status = Server.Status.FAILED
        server.error = error
        server.exit_code = 1
        server.stopped_at = timezone.now()
        server.spawner_state = None
        server.save()
        # A Hub waiting for the start answer learns of the failure from it (419); a Hub that
        # got an early answer learns it from this event.
        server_record_event(
            server=server,
            progress=100,
            message=error,
            failed=True,
            forward=server.address_via_callback,
        )
        _queue_hub_call("hub_flavor_update", server.pk)
    return server


def server_mark_stopped(*, server_id: int, exit_code: int, error: str = "") -> Server | None:
    """End a server as stopped with ``exit_code``; tells the Hub the new flavor counts."""
    with transaction.atomic():
        server = _locked(server_id)
        if server is None or not server.is_active:
            return server
        server.status = Server.Status.STOPPED
        server.exit_code = exit_code
        if error:
            server.error = error
        server.stopped_at = timezone.now()
        server.spawner_state = None
        server.unknown_since = None
        server.save()
        _queue_hub_call("hub_flavor_update", server.pk)
    return server


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


def _start_claim(server_id: int) -> tuple[Server, dict[str, Any] | None] | None:
    """Claim a start: returns the server and the state a crashed earlier attempt left."""
    with transaction.atomic():
        server = _locked(server_id)
        if server is None:
            log.info("Server %s is gone; nothing to start", server_id)
            return None
        if server.status == Server.Status.REQUESTED and server.stop_requested_at is not None:
            server_mark_stopped(server_id=server.pk, exit_code=0)
            return None
        if server.status not in (Server.Status.REQUESTED, Server.Status.PENDING):
            return None  # already started, stopped or failed: a redelivered task
        leftover = server.spawner_state if server.status == Server.Status.PENDING else None
        if server.status == Server.Status.PENDING:
            log.warning("Server %s was pending: an earlier start attempt died; retrying", server.pk)
        server.status = Server.Status.PENDING
        server.started_at = server.started_at or timezone.now()
        server.save(update_fields=["status", "started_at", "updated_at"])
    return server, leftover


def _start_succeeded(*, server_id: int, address: str, state: dict[str, Any]) -> bool:
    """Record a server as running; False if it must not run (stop asked, failed meanwhile)."""
    with transaction.atomic():
        server = _locked(server_id)
        if (
            server is None
            or server.status != Server.Status.PENDING
            or server.stop_requested_at is not None
        ):
            return False
        now = timezone.now()
        server.status = Server.Status.RUNNING
        server.address = address
        server.ready_at = now
        server.last_poll_at = now
        server.spawner_state = state
        runtime = server.flavor.runtime if server.flavor is not None else None
        server.end_at = now + runtime if runtime else None
        if server.address_via_callback and server.address_sent_at is None:
            server.address_sent_at = now
            _queue_hub_call("hub_setup_tunnel", server.pk)
        server.save()
        server_record_event(server=server, progress=100, message="Server ready.", ready=True)
        _queue_hub_call("hub_flavor_update", server.pk)
    return True


def _stop_requested(server_id: int) -> bool:
    server = Server.objects.filter(pk=server_id).only("status", "stop_requested_at").first()
    return server is None or server.stop_requested_at is not None or not server.is_active


def _stop_leftover(server: Server, state: dict[str, Any]) -> None:
    """Stop what an earlier, crashed attempt of a start left behind."""
    try:
        runner = SpawnerRunner(replace(ServerSpec.from_server(server), state=state))
        _run(runner.stop, now=True)
    except Exception:
        log.exception("Could not stop what an earlier start of server %s left", server.pk)


def server_start_run(*, server_id: int, tls_token: str | None = None) -> None:
    """Run a start: requested -> pending -> running, or failed, or stopped if cancelled.

    Progress steps become SpawnEvents forwarded to the Hub. A stop asked for meanwhile
    cancels the start and stops whatever the spawner made; so does the Outpost's start
    timeout. Spawner errors fail the start with a text safe for users; the traceback is
    logged.
    """
    claim = _start_claim(server_id)
    if claim is None:
        return
    server, leftover = claim
    if leftover:
        _stop_leftover(server, leftover)
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
    result = _run(
        start_watched,
        runner,
        tls=tls,
        on_progress=sync_to_async(record_progress),
        stop_requested=sync_to_async(lambda: _stop_requested(server_id)),
        timeout=timeout,
    )
    if result.outcome == StartOutcome.RUNNING:
        if _start_succeeded(server_id=server_id, address=result.address, state=runner.get_state()):
            log.info("Server %s is running at %s", server_id, result.address)
            return
        # Stopped or failed while the spawner was busy: what it made must not stay.
        log.info("Server %s started but a stop was asked for meanwhile; stopping it", server_id)
        _run(runner.stop, now=True)
        server_mark_stopped(server_id=server_id, exit_code=0)
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


def server_stop_run(*, server_id: int) -> None:
    """Stop a running (or unknown, or stopping) server through its spawner's saved state.

    A server whose start has not begun ends at once; one whose start is under way is
    cancelled by its start task. Raises SpawnerFailed when the spawner cannot stop it (the
    task retries).
    """
    with transaction.atomic():
        server = _locked(server_id)
        if server is None or not server.is_active:
            return
        if server.status == Server.Status.REQUESTED:
            server_mark_stopped(server_id=server_id, exit_code=0)
            return
        if server.status == Server.Status.PENDING:
            return  # the start task sees stop_requested_at and cancels
        if server.status != Server.Status.STOPPING:
            server.status = Server.Status.STOPPING
            server.stop_requested_at = server.stop_requested_at or timezone.now()
            server.save(update_fields=["status", "stop_requested_at", "updated_at"])
    try:
        runner = SpawnerRunner.for_server(server)
        _run(runner.stop)
    except Exception as error:
        log.exception("Could not stop server %s", server_id)
        raise SpawnerFailed(f"Could not stop server {server_id}") from error
    # A stop the Hub or the runtime asked for ends normally, whatever signal it took.
    server_mark_stopped(server_id=server_id, exit_code=0)


def server_stop_gave_up(*, server_id: int) -> None:
    server_mark_failed(
        server_id=server_id, error="The server could not be stopped; an administrator was told."
    )


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


def _starts_past_timeout(outpost: Outpost) -> list[Server]:
    now = timezone.now()
    # The start task enforces the timeout itself; this catches starts whose task is gone.
    cutoff = now - outpost.start_timeout - timedelta(seconds=settings.RECONCILE_INTERVAL)
    return list(
        Server.objects.filter(
            outpost=outpost, status__in=[Server.Status.REQUESTED, Server.Status.PENDING]
        ).filter(Q(started_at__lt=cutoff) | Q(started_at__isnull=True, created_at__lt=cutoff))[
            : settings.RECONCILE_BATCH_SIZE
        ]
    )


def _stop_or_retry_later(server: Server) -> None:
    try:
        server_stop_run(server_id=server.pk)
    except SpawnerFailed:
        _queue_task("server_stop_task", server.outpost, server.pk)  # retried with back-off


def _stops_lost(outpost: Outpost) -> list[Server]:
    """Servers still stopping long after every retry of their stop task would have ended:
    that task was lost (a broker without redelivery, a purged queue)."""
    cutoff = timezone.now() - STOP_TASK_LOST_AFTER
    return list(
        Server.objects.filter(
            outpost=outpost, status=Server.Status.STOPPING, stop_requested_at__lt=cutoff
        )
        .select_related("outpost", "flavor")
        .order_by("stop_requested_at")[: settings.RECONCILE_BATCH_SIZE]
    )


def outpost_reconcile_run(*, outpost_id: int) -> None:
    """One reconciler round for an Outpost.

    Fails starts that outlived the start timeout (stopping what they left), stops again
    servers whose stop task was lost, stops servers past their runtime, polls due servers in
    a batch and records exits; a server whose system cannot be asked becomes unknown and is
    ended only after the Outpost's grace.
    """
    outpost = Outpost.objects.filter(pk=outpost_id).first()
    if outpost is None:
        return
    for server in _starts_past_timeout(outpost):
        if server.spawner_state:
            _stop_leftover(server, server.spawner_state)
        minutes = outpost.start_timeout.total_seconds() / 60
        server_mark_failed(
            server_id=server.pk, error=f"The server did not start within {minutes:g} minutes."
        )

    for server in _stops_lost(outpost):
        log.warning("The stop of server %s never finished; stopping it again", server.pk)
        _stop_or_retry_later(server)

    expired = Server.objects.filter(
        outpost=outpost,
        status__in=[Server.Status.RUNNING, Server.Status.UNKNOWN],
        end_at__lte=timezone.now(),
    ).select_related("outpost", "flavor")[: settings.RECONCILE_BATCH_SIZE]
    for server in expired:
        log.info("Server %s reached the end of its runtime; stopping it", server.pk)
        with transaction.atomic():
            locked = _locked(server.pk)
            if locked is None or locked.status not in (
                Server.Status.RUNNING,
                Server.Status.UNKNOWN,
            ):
                continue
            locked.stop_requested_at = locked.stop_requested_at or timezone.now()
            locked.status = Server.Status.STOPPING
            locked.save(update_fields=["stop_requested_at", "status", "updated_at"])
        _stop_or_retry_later(server)

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
