"""Request-side writes on servers: what the API views and the admin call.

A start or stop writes its row and queues the worker's part (outposts/lifecycle/) once the
transaction commits, through outposts.dispatch. When the broker cannot take the task, nothing
stays held: a start is withdrawn (``server_start_withdraw``), a stop is marked for the
reconciler (``server_stop_queue``); both raise TaskQueueUnavailable (docs/operations.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from flavors.services import flavor_admit
from monitoring.logcontext import log_context
from monitoring.services import start_admitted_count, start_refused_count
from outposts import callbacks, dispatch
from outposts.errors import StartRefused
from outposts.models import Hub, Outpost, Server
from outposts.selectors import outpost_for_update, server_for_update, server_twin
from outposts.spawner_settings import trait_values_problems_of
from outposts.workers import outpost_worker_absence
from portal.crypto import encrypt_text
from portal.permissions import permission_holders_set
from portal.text import control_character, json_control_character, log_safe

# JupyterHub's user ids are database ids; ASCII digits only (str.isdigit takes "²" too).
USER_ID = re.compile(r"[0-9]+")

# Server names and start_ids travel unescaped in the URLs a stock Hub builds for polls and
# stops (<request_url>/<name>/<start_id>): a "/" would make the server unreachable for ever,
# "?", "#", "%" or a space would change the URL. Only RFC 3986's unreserved characters mean
# the same wherever they stand. The server name may be empty (the user's default server).
SERVER_NAME = re.compile(r"[A-Za-z0-9._~-]*")
NAME_RULE = (
    "ASCII letters, digits and . _ ~ - only (not . or .. alone): it is a part of the URL "
    "the Hub polls and stops the server at"
)

# What reaches the spawner of the Hub's env (outpost.allowed_env adds to it): JupyterHub's own
# variables, as the stock Hub spawner filters them too. Anything else could change what runs
# in the server before it starts (LD_PRELOAD, PATH, PYTHONSTARTUP, PYTHONPATH, BASH_ENV, ...).
ENV_ALWAYS_ALLOWED = ("JUPYTERHUB_*", "JUPYTER_*")
# What a process environment can hold as a name (os.environ refuses "=" in one).
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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

    def validate(self) -> None:
        """Raises ValidationError({field: [message], ...}) for every field whose rule
        (server_name_problem, start_id_problem, start_env_problem, start_text_problem) fails."""
        problems = {
            "name": server_name_problem(self.name),
            "start_id": start_id_problem(self.start_id),
            "env": start_env_problem(self.env),
            "flavor": start_text_problem(self.flavor or ""),
            **{
                name: start_text_problem(getattr(self, name))
                for name in (
                    "user_options",
                    "misc",
                    "authentication",
                    "certs",
                    "internal_trust_bundles",
                )
            },
        }
        errors = {name: [problem] for name, problem in problems.items() if problem is not None}
        if errors:
            raise ValidationError(errors)


def server_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a server (SERVER_NAME, NAME_RULE), or None. May be empty."""
    if not SERVER_NAME.fullmatch(name) or name in (".", ".."):
        return f"A server name has {NAME_RULE}; got '{log_safe(name)}'."
    return None


def start_id_problem(start_id: str) -> str | None:
    """Why ``start_id`` cannot be a start id (the server name's rule, not empty), or None."""
    if not start_id or not SERVER_NAME.fullmatch(start_id) or start_id in (".", ".."):
        return f"A start_id has {NAME_RULE}; got '{log_safe(start_id)}'."
    return None


def lookup_names_problem(*, name: str, start_id: str) -> str | None:
    """Why a poll, stop or events path cannot name a server, or None.

    Only what no server can ever be named: servers named before the character rule
    (SERVER_NAME) must stay reachable, so other names are looked up and simply not found.
    """
    for what, text in (("server name", name), ("start_id", start_id)):
        found = control_character(text)
        if found is not None:
            return f"The {what} contains the control character {found}."
    return None


def start_env_problem(env: Mapping[str, str]) -> str | None:
    """What keeps a start's env from being admissible, or None: it must name the Hub user
    (JUPYTERHUB_USER) and a numeric user id (JUPYTERHUB_USER_ID), and hold no control
    characters (no NUL reaches the database, no newline a process environment or a log)."""
    for key, value in env.items():
        found = control_character(key) or control_character(value)
        if found is not None:
            return f"{log_safe(key)} contains the control character {found}."
    # Per-user limits count servers by (Hub, user id): without an id every such start would
    # share one count, and a start nobody can be told apart in is not admissible.
    if not env.get("JUPYTERHUB_USER"):
        return "JUPYTERHUB_USER (the Hub user's name) is required."
    if not USER_ID.fullmatch(env.get("JUPYTERHUB_USER_ID", "")):
        return "JUPYTERHUB_USER_ID (the Hub user's id) is required and must be a number."
    return None


def start_text_problem(value: Any) -> str | None:
    """Where a start's free-form JSON (user_options, misc, ...) holds a control character
    other than tab, line feed and carriage return (text areas send those), or None."""
    return json_control_character(value, allow_whitespace=True)


def start_env_allowed(*, env: Mapping[str, str], outpost: Outpost) -> dict[str, str]:
    """The part of a Hub's env that may reach ``outpost``'s spawner: JupyterHub's own
    variables (ENV_ALWAYS_ALLOWED) and those the Outpost's admin allow-lists (allowed_env,
    names or glob patterns). Every other key is dropped."""
    patterns = (*ENV_ALWAYS_ALLOWED, *(outpost.allowed_env or []))
    return {
        key: value
        for key, value in env.items()
        if ENV_NAME.fullmatch(key) and any(fnmatchcase(key, pattern) for pattern in patterns)
    }


def start_overrides_allowed(*, misc: Mapping[str, Any], outpost: Outpost) -> dict[str, Any]:
    """The part of a Hub's ``misc`` that may reach ``outpost``'s spawner: the allow-listed
    keys (allowed_overrides). Raises ValidationError when a value is not one the Outpost
    allows for its key (allowed_override_values): the user asked for it, and a start with
    something else would surprise them, or a value its trait's type refuses
    (outposts/spawner_settings.py): the spawner would fail with a bare TypeError."""
    allowed = set(outpost.allowed_overrides)
    kept = {key: value for key, value in misc.items() if key in allowed}
    problems = trait_values_problems_of(
        spawner_class=outpost.spawner_class, values=kept, types_only=True
    )
    if problems:
        raise ValidationError({"misc": problems})
    for key, patterns in (outpost.allowed_override_values or {}).items():
        if key not in kept:
            continue
        value = kept[key]
        if not isinstance(value, str) or not any(fnmatchcase(value, p) for p in patterns):
            raise ValidationError(
                {"misc": [f"{key} {log_safe(str(value))!r} is not one this Outpost allows."]}
            )
    return kept


def server_start(*, hub: Hub, outpost: Outpost, request: StartRequest) -> tuple[Server, bool]:
    """Admit a start and queue it; returns the server and whether it is new.

    A repeated start with the same (Hub, Outpost, name, start_id) returns the existing server;
    one by another user of that Hub is refused.
    Only the misc and user_options keys the Outpost allow-lists are kept, and misc values
    only where they are allowed (start_overrides_allowed): batch spawners fill their job
    script from user_options, so any other key could set memory, partition or prologue lines
    past the flavors. Of the env only what start_env_allowed lets through is
    stored, so the row holds exactly what the spawner gets. The flavor as admission resolved
    it is frozen onto the server. Raises ValidationError when the request names no Hub user or
    no numeric user id, or breaks a character rule (StartRequest.validate), StartRefused when
    admission says no (flavors/services.py). The start task is queued after commit; when the
    broker cannot take it, the start is withdrawn (server_start_withdraw) and
    TaskQueueUnavailable raised, so the Hub can retry the same start at once.
    """
    request.validate()
    # Every log line of this start (and of the tasks it queues) names its start_id.
    with log_context(start_id=request.start_id):
        try:
            return _server_start(hub=hub, outpost=outpost, request=request)
        except StartRefused as refusal:
            # Outside the start's transaction, which the refusal rolled back.
            start_refused_count(outpost=outpost, reason=refusal.reason)
            raise


def _server_start(*, hub: Hub, outpost: Outpost, request: StartRequest) -> tuple[Server, bool]:
    # Read before the Outpost is locked: every start on it waits for that lock, so as little
    # as possible happens under it.
    absence = outpost_worker_absence(outpost=outpost)
    with transaction.atomic():
        # Locked before the look-up and admission: starts on one Outpost queue up here, so
        # admission's counts cannot change under it, and a repeated start that races its
        # twin finds the twin rather than be counted against it.
        outpost = outpost_for_update(outpost=outpost)
        existing = server_twin(
            hub=hub, outpost=outpost, name=request.name, start_id=request.start_id
        )
        if existing is not None:
            if (existing.user_id, existing.user_name) != (request.user_id, request.user_name):
                # The contract names a server by (Hub, name, start_id) only: another user's
                # start with the same pair must not be handed this server and its address.
                raise StartRefused(
                    f"{request.name or 'default'} - start_id {request.start_id} is already "
                    "another user's server on this Outpost; start with a new start_id.",
                    reason="start_id_taken",
                )
            return existing, False
        overrides = start_overrides_allowed(misc=request.misc, outpost=outpost)
        admission = flavor_admit(
            hub=hub,
            outpost=outpost,
            flavor_name=request.flavor,
            server_name=request.name,
            user_id=request.user_id,
            authentication=request.authentication,
            project=str(request.user_options.get("project") or "") or None,
            user_name=request.user_name,
        )
        # flavor and project were admission's inputs; a spawner sees them only if listed.
        allowed_options = set(outpost.allowed_user_options)
        server = Server.objects.create(
            hub=hub,
            outpost=outpost,
            flavor_id=admission.flavor_id,
            flavor_settings=admission.flavor_settings,
            project_id=admission.project_id,
            name=request.name,
            start_id=request.start_id,
            user_id=request.user_id,
            user_name=request.user_name,
            user_options={
                key: value for key, value in request.user_options.items() if key in allowed_options
            },
            overrides=overrides,
            env=start_env_allowed(env=request.env, outpost=outpost),
            # An async start's Hub waits for a set-up-tunnel call, if it named where to
            # make it (our hubclient follows the events endpoint instead).
            address_via_callback=request.start_async
            and bool(request.env.get("JUPYTERHUB_SETUPTUNNEL_URL")),
        )
        tls = {"certs": request.certs, "internal_trust_bundles": request.internal_trust_bundles}
        # Queued before the events' forwarding: if the broker is down, the start's own attempt
        # answers the Hub and the forwarding of events of a withdrawn start is never tried.
        dispatch.queue_server_start(
            server=server,
            tls_token=encrypt_text(json.dumps(tls)),
            if_unqueued=lambda: server_start_withdraw(server_id=server.pk),
        )
        callbacks.server_record_event(server=server, progress=10, message="Start request accepted.")
        # Rather than silence while nobody serves the queue (outposts/workers.py).
        if absence:
            callbacks.server_record_event(server=server, progress=10, message=absence)
        # Counted once its task is queued (after that hook): neither a start rolled back nor
        # one withdrawn counts, and the count is not written under the Outpost's lock.
        flavor_name = getattr(admission.flavor, "name", "")
        transaction.on_commit(
            lambda: start_admitted_count(outpost=outpost, flavor_name=flavor_name)
        )
    return server, True


# The error of a start withdrawn because its task could not be queued (history only: the Hub
# got a 503 and never sees this server).
START_NOT_QUEUED = "The start could not be queued (the portal's task queue was unavailable)."


def server_start_withdraw(*, server_id: int) -> None:
    """Take back a start whose task never reached the broker: it ends failed and removed, so
    it holds no flavor slot and a repeated start with the same start_id is a new one.

    Only a start nobody claimed (REQUESTED): none can have, its task was never queued.
    """
    now = timezone.now()
    Server.objects.filter(pk=server_id, status=Server.Status.REQUESTED).update(
        status=Server.Status.FAILED,
        exit_code=1,
        error=START_NOT_QUEUED,
        stopped_at=now,
        removed_at=now,
        updated_at=now,
    )


def server_stop(*, server: Server) -> Server:
    """Ask for a server to stop and queue its stop task; idempotent.

    A server still starting is cancelled: the start task sees stop_requested_at and the stop
    task ends whatever the spawner already made (batch job, pod, process). Raises
    TaskQueueUnavailable when the broker cannot take the stop task: the stop stays recorded
    and is queued again by the reconciler, or by a repeated stop (server_stop_queue).
    """
    # The stop task, whoever asks for it (a Hub, the reconciler), logs with the start_id.
    with log_context(start_id=server.start_id), transaction.atomic():
        server = server_for_update(server_id=server.pk) or server
        if not server.is_active:
            return server
        if server.stop_requested_at is None:
            server.stop_requested_at = timezone.now()
            # A start in progress keeps its status: its task owns the spawner and cancels.
            if server.status in (Server.Status.RUNNING, Server.Status.UNKNOWN):
                server.status = Server.Status.STOPPING
            server.save(update_fields=["stop_requested_at", "status", "updated_at"])
            server_stop_queue(server=server)
        elif server.stop_unqueued_since is not None:
            # The first stop never reached the broker: a repeated one does the work at once.
            server_stop_queue(server=server)
    return server


def server_stop_queue(*, server: Server) -> None:
    """Queue the server's stop task once the transaction commits.

    When the broker cannot take it, the server is marked (stop_unqueued_since) and
    TaskQueueUnavailable raised; the reconciler's next round, or a repeated stop, queues it
    again (selectors.stops_unqueued). Queueing clears an earlier mark.
    """
    if server.stop_unqueued_since is not None:
        Server.objects.filter(pk=server.pk).update(stop_unqueued_since=None)
        server.stop_unqueued_since = None

    def mark_unqueued() -> None:
        Server.objects.filter(pk=server.pk).active().update(stop_unqueued_since=timezone.now())

    dispatch.queue_server_stop(server=server, if_unqueued=mark_unqueued)


def server_remove(*, server: Server) -> Server:
    """The Hub deletes a server: stop it if needed, and hide it from the API from now on."""
    server = server_stop(server=server)
    Server.objects.filter(pk=server.pk, removed_at__isnull=True).update(removed_at=timezone.now())
    server.refresh_from_db()
    return server


def server_address_deferred(*, server: Server) -> Server:
    """A synchronous start answered the Hub without an address (its wait ran out).

    The Hub now waits for a set-up-tunnel call: it is queued at once if the server is
    already running, otherwise the start task makes it when the server is running.
    """
    with transaction.atomic():
        locked = server_for_update(server_id=server.pk)
        if locked is None:
            return server
        locked.address_via_callback = True
        if locked.status == Server.Status.RUNNING and locked.address_sent_at is None:
            locked.address_sent_at = timezone.now()
            dispatch.queue_hub_address_send(server_id=locked.pk)
        locked.save(update_fields=["address_via_callback", "address_sent_at", "updated_at"])
    return locked


def outpost_site_admins_set(*, outpost: Outpost, users: Iterable[Any]) -> None:
    """Make exactly ``users`` the site admins of ``outpost`` (its object permission)."""
    permission_holders_set(obj=outpost, codename="change_outpost", users=users)
