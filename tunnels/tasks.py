"""Celery tasks of tunnels: one-line callers of the services each is named after, queued by
outposts.dispatch on the default queue. They take ids and are safe to run twice (a second
restart only bumps the generation once more)."""

from __future__ import annotations

from celery import shared_task

from outposts.tasks import DB_RETRY, HUB_CALL_RETRY
from tunnels import services


@shared_task(**DB_RETRY)
def tunnel_restart_for_node_task(
    node: str | None = None, jump_host: str | None = None, outpost_id: int | None = None
) -> int:
    return services.tunnel_restart_for_node(node=node, jump_host=jump_host, outpost_id=outpost_id)


@shared_task(**DB_RETRY)
def outpost_tunnels_restart_task(outpost_id: int) -> int:
    return services.outpost_tunnels_restart(outpost_id=outpost_id)


@shared_task(**HUB_CALL_RETRY)
def hub_forwards_recreate_task(hub_id: int, server_id: int) -> None:
    services.hub_forwards_recreate(hub_id=hub_id, server_id=server_id)
