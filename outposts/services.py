"""Writes on Outposts, Hubs and servers. Views, admin, commands and tasks call these."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from flavors.services import flavor_admit
from outposts.errors import StartRefused
from outposts.models import Hub, HubAPIKey, Outpost, Server, SpawnEvent
from portal.crypto import credential_digest, encrypt_text, new_credential

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
    Only misc keys the Outpost allow-lists are kept. Raises StartRefused when the Outpost does
    not accept starts or admission says no. The start task is queued after commit.
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
        server = Server.objects.create(
            hub=hub,
            outpost=outpost,
            flavor=flavor,
            name=request.name,
            start_id=request.start_id,
            user_id=request.user_id,
            user_name=request.user_name,
            user_options=request.user_options,
            overrides={key: value for key, value in request.misc.items() if key in allowed},
            env=request.env,
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
    *, server: Server, progress: int, message: str, failed: bool = False, ready: bool = False
) -> SpawnEvent:
    """Store a progress step and forward it to the Hub's events URL after commit.

    Forwarding runs as its own task, so a Hub that is slow or down never fails a start.
    """
    from outposts import tasks

    event = SpawnEvent.objects.create(
        server=server, progress=progress, message=message, failed=failed, ready=ready
    )
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
