"""The only module that names Celery tasks and queues: the rest of the portal queues work here.

Everything is queued once the current transaction commits, so a task never reads a row that
is not there yet, nor runs for a write that rolled back (outside a transaction it is queued at
once). Lifecycle tasks go to the Outpost's own queue, which only workers next to its system
serve; Hub call-backs go to the default queue, which any worker serves.

``outposts.tasks`` calls the services that call this module, so the tasks are imported when
first queued: this is the one lazy import of the portal.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django.core.cache import cache
from django.db import transaction

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


def queue_tunnel_restart_for_node(
    *, node: str | None, jump_host: str | None, outpost_id: int | None
) -> None:
    from tunnels.tasks import tunnel_restart_for_node_task

    tunnel_restart_for_node_task.delay_on_commit(node, jump_host, outpost_id)


def queue_outpost_tunnels_restart(*, outpost_id: int) -> None:
    from tunnels.tasks import outpost_tunnels_restart_task

    outpost_tunnels_restart_task.delay_on_commit(outpost_id)


def queue_hub_forwards_recreate(*, hub_id: int, server_id: int) -> None:
    from tunnels.tasks import hub_forwards_recreate_task

    hub_forwards_recreate_task.delay_on_commit(hub_id, server_id)


# Flavor-table pushes after an admin change wait this long, so that one save (an Outpost with
# its flavor, policy and rule inlines, an import) sends each Hub one update, not one per row.
FLAVOR_TABLE_PUSH_DELAY = 2.0

log = logging.getLogger(__name__)


def flavor_table_push_key(*, hub_id: int, outpost_id: int) -> str:
    return f"outposts:flavor-table-push:{hub_id}:{outpost_id}"


def queue_hub_flavor_table_send(*, hub_id: int, outpost_id: int) -> None:
    """Push the Hub its flavor table of the Outpost soon after the transaction commits,
    coalesced: while a push is waiting, further ones are dropped (the waiting one reads the
    table when it runs). A broker that is down costs the push, never the caller's save."""
    from outposts.tasks import hub_flavor_table_send_task

    def queue() -> None:
        key = flavor_table_push_key(hub_id=hub_id, outpost_id=outpost_id)
        if not cache.add(key, True, timeout=FLAVOR_TABLE_PUSH_DELAY + 60):
            return
        try:
            hub_flavor_table_send_task.apply_async(
                args=[hub_id, outpost_id], countdown=FLAVOR_TABLE_PUSH_DELAY
            )
        except Exception:  # the broker's errors are not one family; the save stands anyway
            cache.delete(key)
            log.exception("Could not queue the flavor table push to Hub %s", hub_id)

    transaction.on_commit(queue)
