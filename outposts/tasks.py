"""Celery tasks: thin callers of outposts.services.

They take ids, tolerate deleted rows and are safe to run twice (acks_late redelivers a
crashed worker's task). Lifecycle tasks run on the Outpost's own queue (services._queue_task
sends them there); Hub call-backs and the beat fan-out run on the default queue. Only named
transient errors are retried, with exponential back-off.
"""

from __future__ import annotations

import logging

from celery import Task, shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from outposts import hubcalls, services
from outposts.errors import SpawnerFailed
from outposts.models import Outpost

log = logging.getLogger(__name__)

# A database that blinks (restart, fail-over) is worth a retry; anything else is a bug or a
# spawner failure, which the services record on the server.
DB_TRANSIENT = (OperationalError, InterfaceError)
STOP_MAX_RETRIES = 5


@shared_task(autoretry_for=DB_TRANSIENT, retry_backoff=True, retry_backoff_max=300, max_retries=5)
def server_start_task(server_id: int, tls_token: str | None = None) -> None:
    services.server_start_run(server_id=server_id, tls_token=tls_token)


@shared_task(
    bind=True, autoretry_for=DB_TRANSIENT, retry_backoff=True, retry_backoff_max=300, max_retries=5
)
def server_stop_task(self: Task, server_id: int) -> None:
    try:
        services.server_stop_run(server_id=server_id)
    except SpawnerFailed as error:
        if self.request.retries >= STOP_MAX_RETRIES:
            services.server_stop_gave_up(server_id=server_id)
            return
        raise self.retry(exc=error, countdown=min(300, 5 * 2**self.request.retries)) from error


@shared_task
def servers_reconcile() -> None:
    """Beat: one reconciler round per Outpost, each on that Outpost's queue."""
    for outpost in Outpost.objects.all():
        # A round older than the interval is superseded by the next one: let it expire
        # rather than pile up on a queue no worker serves.
        outpost_reconcile.apply_async(
            args=[outpost.pk], queue=outpost.celery_queue, expires=settings.RECONCILE_INTERVAL
        )


@shared_task(autoretry_for=DB_TRANSIENT, retry_backoff=True, max_retries=3)
def outpost_reconcile(outpost_id: int) -> None:
    services.outpost_reconcile_run(outpost_id=outpost_id)


HUB_CALL_RETRY = {
    "autoretry_for": (hubcalls.HubUnreachable, *DB_TRANSIENT),
    "retry_backoff": 2,
    "retry_backoff_max": 120,
    "retry_jitter": True,
    "max_retries": settings.HUB_CALL_MAX_RETRIES,
}


@shared_task(**HUB_CALL_RETRY)
def hub_forward_event(event_id: int) -> None:
    """POST a progress event to the Hub's events URL; a Hub that refuses it is only logged."""
    services.hub_event_send(event_id=event_id)


@shared_task(**HUB_CALL_RETRY)
def hub_setup_tunnel(server_id: int) -> None:
    """Tell a Hub that got no address in its start answer where the server listens."""
    services.hub_address_send(server_id=server_id)


@shared_task(**HUB_CALL_RETRY)
def hub_flavor_update(server_id: int) -> None:
    """Send a Hub its flavors with current counts, after a server started or ended."""
    services.hub_flavors_send(server_id=server_id)
