"""The only module that names Celery tasks and queues: the rest of the portal queues work here.

Everything is queued once the current transaction commits, so a task never reads a row that
is not there yet, nor runs for a write that rolled back (outside a transaction it is queued at
once). Lifecycle tasks go to the Outpost's own queue, which only workers next to its system
serve; Hub call-backs go to the default queue, which any worker serves.

``outposts.tasks`` calls the services that call this module, so the tasks are imported when
first queued: this is the one lazy import of the portal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from outposts.models import Outpost, Server


def queue_server_start(*, server: Server, tls_token: str) -> None:
    from outposts.tasks import server_start_run_task

    server_start_run_task.apply_async_on_commit(
        args=[server.pk, tls_token], queue=server.outpost.celery_queue
    )


def queue_server_stop(*, server: Server) -> None:
    from outposts.tasks import server_stop_run_task

    server_stop_run_task.apply_async_on_commit(args=[server.pk], queue=server.outpost.celery_queue)


def queue_outpost_reconcile(*, outpost: Outpost, expires: float) -> None:
    """A reconciler round older than ``expires`` seconds is superseded by the next one: it
    expires rather than pile up on a queue no worker serves."""
    from outposts.tasks import outpost_reconcile_task

    outpost_reconcile_task.apply_async_on_commit(
        args=[outpost.pk], queue=outpost.celery_queue, expires=expires
    )


def queue_hub_event_send(*, event_id: int) -> None:
    from outposts.tasks import hub_event_send_task

    hub_event_send_task.delay_on_commit(event_id)


def queue_hub_address_send(*, server_id: int) -> None:
    from outposts.tasks import hub_address_send_task

    hub_address_send_task.delay_on_commit(server_id)


def queue_hub_flavors_send(*, server_id: int) -> None:
    from outposts.tasks import hub_flavors_send_task

    hub_flavors_send_task.delay_on_commit(server_id)
