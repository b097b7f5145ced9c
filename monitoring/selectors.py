"""What /metrics and /readyz read from the database: a few grouped queries per scrape."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db.models import Count

from monitoring.models import MetricCount
from outposts.models import Outpost, Server, WorkerHeartbeat
from outposts.workers import WorkerSeen
from tunnels.models import Tunnel


@dataclass(frozen=True)
class ServerCount:
    outpost: str
    flavor: str
    status: str
    count: int


def queues_needing_workers() -> list[str]:
    """The default queue (Hub call-backs, beat's fan-out) and the queue of every Outpost that
    is not disabled (a draining one still stops and polls its servers)."""
    queues = {settings.CELERY_TASK_DEFAULT_QUEUE}
    for outpost in Outpost.objects.exclude(state=Outpost.State.DISABLED).only("slug", "queue"):
        queues.add(outpost.celery_queue)
    return sorted(queues)


def queues_known() -> list[str]:
    """The default queue and every Outpost's, for the queue metrics."""
    queues = {settings.CELERY_TASK_DEFAULT_QUEUE}
    queues.update(outpost.celery_queue for outpost in Outpost.objects.only("slug", "queue"))
    return sorted(queues)


def workers_seen(*, queues: list[str]) -> list[WorkerSeen]:
    """What the workers' stamps say of each queue (outposts/workers.py decides what is live)."""
    stamps = {row.queue: row for row in WorkerHeartbeat.objects.filter(queue__in=queues)}
    seen = []
    for queue in queues:
        stamp = stamps.get(queue)
        seen.append(
            WorkerSeen(queue=queue, last_seen_at=None)
            if stamp is None
            else WorkerSeen(queue=queue, last_seen_at=stamp.last_seen_at, hostname=stamp.hostname)
        )
    return seen


def servers_active_counted() -> list[ServerCount]:
    """Servers not yet stopped or failed, by Outpost, flavor and status (one query)."""
    rows = (
        Server.objects.active()
        .values("outpost__slug", "flavor__name", "status")
        .annotate(count=Count("pk"))
        .order_by()
    )
    return [
        ServerCount(
            outpost=row["outpost__slug"],
            flavor=row["flavor__name"] or "",
            status=row["status"],
            count=row["count"],
        )
        for row in rows
    ]


def tunnels_wanted_counted() -> list[tuple[str, str, int]]:
    """Tunnels that should be open, as (Outpost, state, count): open, pending or failed."""
    rows = (
        Tunnel.objects.filter(desired_state=Tunnel.Desired.OPEN)
        .values("outpost__slug", "state")
        .annotate(count=Count("pk"))
        .order_by()
    )
    return [(row["outpost__slug"], row["state"], row["count"]) for row in rows]


def metric_counts_all() -> list[MetricCount]:
    return list(MetricCount.objects.order_by("name", "labels"))
