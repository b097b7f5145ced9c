"""The only module that names Celery tasks and queues: the rest of the portal queues work here.

Everything is queued once the current transaction commits, so a task never reads a row that
is not there yet, nor runs for a write that rolled back (outside a transaction it is queued at
once). Lifecycle tasks go to the Outpost's own queue, which only workers next to its system
serve; Hub call-backs go to the default queue, which any worker serves.

When the broker cannot take a task (docs/operations.md): a task the caller's request depends
on (a start, a stop, a tunnel restart) raises TaskQueueUnavailable from the commit, after
``if_unqueued`` has recorded what became of the row (the services say what: a start is
withdrawn, a stop marked for the reconciler); a Hub call-back is optional (api-contract §6)
and is only logged, so it never fails the request it belongs to.

``outposts.tasks`` calls the services that call this module, so the tasks are imported when
first queued: this is the one lazy import of the portal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from celery import Task
from django.core.cache import cache
from django.db import transaction
from kombu.exceptions import OperationalError as BrokerUnreachable

from outposts.errors import TaskQueueUnavailable

if TYPE_CHECKING:
    from outposts.models import Outpost, OutpostTrial, Server

log = logging.getLogger(__name__)

# What apply_async raises when the broker refuses or does not answer, once Celery's publish
# retries (CELERY_TASK_PUBLISH_RETRY_POLICY) are spent: kombu wraps the transport's errors.
QUEUE_UNAVAILABLE = "The portal's task queue is unavailable"


def _queue_on_commit(
    task: Task,
    *,
    unavailable: str,
    if_unqueued: Callable[[], None] | None = None,
    **options: Any,
) -> None:
    """Queue ``task`` once the transaction commits; when the broker cannot take it, call
    ``if_unqueued`` (in autocommit: the caller's transaction has committed) and raise
    TaskQueueUnavailable(``unavailable``) from the commit."""
    transaction.on_commit(partial(_publish, task, options, unavailable, if_unqueued))


def _publish(
    task: Task,
    options: dict[str, Any],
    unavailable: str,
    if_unqueued: Callable[[], None] | None,
) -> None:
    try:
        task.apply_async(**options)
    except BrokerUnreachable as error:
        log.warning("%s: %s was not queued (%s)", QUEUE_UNAVAILABLE, task.name, error)
        if if_unqueued is not None:
            if_unqueued()
        raise TaskQueueUnavailable(unavailable) from error


def _send_on_commit(task: Task, *args: Any) -> None:
    """Queue a Hub call-back once the transaction commits; a broker that is down costs the
    call (logged), never the start or stop it belongs to."""
    transaction.on_commit(partial(_send, task, args))


def _send(task: Task, args: tuple[Any, ...]) -> None:
    try:
        task.delay(*args)
    except BrokerUnreachable as error:
        log.warning("%s: %s%r was dropped (%s)", QUEUE_UNAVAILABLE, task.name, args, error)


def queue_server_start(
    *, server: Server, tls_token: str, if_unqueued: Callable[[], None] | None = None
) -> None:
    from outposts.tasks import server_start_run_task

    _queue_on_commit(
        server_start_run_task,
        args=[server.pk, tls_token],
        # What monitoring and worker logs show of the arguments: the id, not the (encrypted)
        # internal-SSL material, which would also cost a repr of kilobytes per start.
        argsrepr=f"({server.pk}, <TLS material>)",
        queue=server.outpost.celery_queue,
        unavailable=f"{QUEUE_UNAVAILABLE}: the start was not accepted; try again shortly.",
        if_unqueued=if_unqueued,
    )


def queue_server_stop(*, server: Server, if_unqueued: Callable[[], None] | None = None) -> None:
    from outposts.tasks import server_stop_run_task

    _queue_on_commit(
        server_stop_run_task,
        args=[server.pk],
        queue=server.outpost.celery_queue,
        unavailable=f"{QUEUE_UNAVAILABLE}: the stop is recorded and will be carried out "
        "once it is back.",
        if_unqueued=if_unqueued,
    )


def queue_outpost_trial_run(*, trial: OutpostTrial, if_unqueued: Callable[[], None]) -> None:
    """A trial start runs on the Outpost's own queue: where its servers run (outposts/trial.py)."""
    from outposts.tasks import outpost_trial_run_task

    _queue_on_commit(
        outpost_trial_run_task,
        args=[trial.pk],
        queue=trial.outpost.celery_queue,
        unavailable=f"{QUEUE_UNAVAILABLE}: the trial was not queued; try again later.",
        if_unqueued=if_unqueued,
    )


def queue_outpost_reconcile(*, outpost: Outpost, expires: float) -> None:
    """A reconciler round older than ``expires`` seconds is superseded by the next one: it
    expires rather than pile up on a queue no worker serves."""
    from outposts.tasks import outpost_reconcile_task

    _queue_on_commit(
        outpost_reconcile_task,
        args=[outpost.pk],
        queue=outpost.celery_queue,
        expires=expires,
        unavailable=f"{QUEUE_UNAVAILABLE}: no reconciler round was queued.",
    )


def queue_hub_event_send(*, event_id: int) -> None:
    from outposts.tasks import hub_event_send_task

    _send_on_commit(hub_event_send_task, event_id)


def queue_hub_address_send(*, server_id: int) -> None:
    from outposts.tasks import hub_address_send_task

    _send_on_commit(hub_address_send_task, server_id)


def queue_hub_flavors_send(*, server_id: int) -> None:
    from outposts.tasks import hub_flavors_send_task

    _send_on_commit(hub_flavors_send_task, server_id)


def queue_tunnel_restart_for_node(
    *, node: str | None, jump_host: str | None, outpost_id: int | None
) -> None:
    from tunnels.tasks import tunnel_restart_for_node_task

    _queue_on_commit(
        tunnel_restart_for_node_task,
        args=[node, jump_host, outpost_id],
        unavailable=f"{QUEUE_UNAVAILABLE}: the tunnels were not restarted; try again shortly.",
    )


def queue_outpost_tunnels_restart(*, outpost_id: int) -> None:
    from tunnels.tasks import outpost_tunnels_restart_task

    _queue_on_commit(
        outpost_tunnels_restart_task,
        args=[outpost_id],
        unavailable=f"{QUEUE_UNAVAILABLE}: the tunnels were not restarted; try again shortly.",
    )


def queue_hub_forwards_recreate(*, hub_id: int, server_id: int) -> None:
    from tunnels.tasks import hub_forwards_recreate_task

    _queue_on_commit(
        hub_forwards_recreate_task,
        args=[hub_id, server_id],
        unavailable=f"{QUEUE_UNAVAILABLE}: the Hub's forwards were not re-created.",
    )


# Flavor-table pushes after an admin change wait this long, so that one save (an Outpost with
# its flavor, policy and rule inlines, an import) sends each Hub one update, not one per row.
FLAVOR_TABLE_PUSH_DELAY = 2.0


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
        except BrokerUnreachable as error:  # the save stands anyway
            cache.delete(key)
            log.warning(
                "%s: the flavor table push to Hub %s was dropped (%s)",
                QUEUE_UNAVAILABLE,
                hub_id,
                error,
            )

    transaction.on_commit(queue)
