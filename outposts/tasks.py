"""Celery tasks: one-line callers of the service each is named after.

They take ids, tolerate deleted rows and are safe to run twice (acks_late redelivers a
crashed worker's task). outposts.dispatch alone queues them: lifecycle tasks on the Outpost's
own queue, Hub call-backs and the beat fan-out on the default queue. Only named transient
errors are retried, with exponential back-off.
"""

from __future__ import annotations

from celery import Task, shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from outposts import callbacks, hubcalls, trial
from outposts.errors import SpawnerFailed
from outposts.lifecycle import end, reconcile, start

# A database that blinks (restart, fail-over) is worth a retry; anything else is a bug or a
# spawner failure, which the services record on the server.
DB_TRANSIENT = (OperationalError, InterfaceError)
STOP_MAX_RETRIES = 5
DB_RETRY = {
    "autoretry_for": DB_TRANSIENT,
    "retry_backoff": True,
    "retry_backoff_max": 300,
    "max_retries": 5,
}


@shared_task(**DB_RETRY)
def server_start_run_task(server_id: int, tls_token: str | None = None) -> None:
    start.server_start_run(server_id=server_id, tls_token=tls_token)


@shared_task(bind=True, **DB_RETRY)
def server_stop_run_task(self: Task, server_id: int) -> None:
    try:
        end.server_stop_run(server_id=server_id)
    except SpawnerFailed as error:
        if self.request.retries >= STOP_MAX_RETRIES:
            end.server_stop_gave_up(server_id=server_id)
            return
        raise self.retry(exc=error, countdown=min(300, 5 * 2**self.request.retries)) from error


@shared_task
def outposts_reconcile_task() -> None:
    """Beat: one reconciler round per Outpost, each on that Outpost's queue."""
    reconcile.outposts_reconcile()


@shared_task(autoretry_for=DB_TRANSIENT, retry_backoff=True, max_retries=3)
def outpost_reconcile_task(outpost_id: int) -> None:
    reconcile.outpost_reconcile(outpost_id=outpost_id)


@shared_task
def outpost_trial_run_task(trial_id: int) -> None:
    trial.outpost_trial_run(trial_id=trial_id)


HUB_CALL_RETRY = {
    "autoretry_for": (hubcalls.HubUnreachable, *DB_TRANSIENT),
    "retry_backoff": 2,
    "retry_backoff_max": 120,
    "retry_jitter": True,
    "max_retries": settings.HUB_CALL_MAX_RETRIES,
}


@shared_task(**HUB_CALL_RETRY)
def hub_event_send_task(event_id: int) -> None:
    callbacks.hub_event_send(event_id=event_id)


@shared_task(**HUB_CALL_RETRY)
def hub_address_send_task(server_id: int) -> None:
    callbacks.hub_address_send(server_id=server_id)


@shared_task(**HUB_CALL_RETRY)
def hub_flavors_send_task(server_id: int) -> None:
    callbacks.hub_flavors_send(server_id=server_id)


@shared_task(**HUB_CALL_RETRY)
def hub_flavor_table_send_task(hub_id: int, outpost_id: int) -> None:
    callbacks.hub_flavor_table_send(hub_id=hub_id, outpost_id=outpost_id)
