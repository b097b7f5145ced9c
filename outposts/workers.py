"""Worker liveness: the stamp each Celery worker writes for the queues it serves, and what
counts as a live worker. The one home of both rules.

A worker runs ``WorkerHeartbeatStep`` (added to the Celery app's consumer in portal/celery.py):
a thread that, every ``WORKER_HEARTBEAT_INTERVAL`` seconds while the worker consumes, stamps
one ``WorkerHeartbeat`` row per queue with the worker's node name. The portal reads the rows:
the admin shows them per Outpost, and a start queued for an Outpost with no live worker says
so in its progress: at admission, and at beat's next round when the worker went away later.

Why a stamp in the database and not Celery's own means: ``celery inspect ping``, worker
events and gossip go over broadcast (fanout) exchanges, which kombu's filesystem transport
(the embedded broker) does not have, and the portal's workers run ``--without-gossip``. A
periodic task routed to each Outpost's queue would work on every broker, but it waits behind
the tasks already queued (a worker busy with long starts looks dead) and piles up on a queue
nobody serves. Every worker already reaches the database, so the stamp needs nothing new.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from celery import bootsteps
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from django.db.models import CharField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce, Concat, NullIf
from django.utils import timezone

from portal.compiled import compiled, text_stand_in

if TYPE_CHECKING:
    from outposts.models import Outpost

log = logging.getLogger(__name__)


def worker_heartbeat_record(*, queues: list[str], hostname: str) -> None:
    """Stamp ``queues`` as served by the worker ``hostname`` now: one statement, safe when
    two workers of one queue stamp at once."""
    from outposts.models import WorkerHeartbeat

    now = timezone.now()
    WorkerHeartbeat.objects.bulk_create(
        [WorkerHeartbeat(queue=queue, hostname=hostname, last_seen_at=now) for queue in queues],
        update_conflicts=True,
        unique_fields=["queue"],
        update_fields=["hostname", "last_seen_at"],
    )


@dataclass(frozen=True)
class WorkerSeen:
    """What the portal knows of the workers of one queue."""

    queue: str
    last_seen_at: datetime | None
    hostname: str = ""

    @property
    def age(self) -> timedelta | None:
        return None if self.last_seen_at is None else timezone.now() - self.last_seen_at

    @property
    def live(self) -> bool:
        age = self.age
        return age is not None and age <= timedelta(seconds=settings.WORKER_SEEN_WITHIN)


_QUEUE = text_stand_in("queue")


def _stamp_query() -> QuerySet[Any]:
    from outposts.models import WorkerHeartbeat

    return WorkerHeartbeat.objects.filter(queue=_QUEUE)[:1]


def outpost_worker_seen(*, outpost: Outpost) -> WorkerSeen:
    """When a worker serving the Outpost's queue was last seen. Compiled once: every start
    asks."""
    rows = compiled(_stamp_query).instances({_QUEUE: outpost.celery_queue})
    row = rows[0] if rows else None
    if row is None:
        return WorkerSeen(queue=outpost.celery_queue, last_seen_at=None)
    return WorkerSeen(queue=row.queue, last_seen_at=row.last_seen_at, hostname=row.hostname)


# The annotations outposts_with_worker_seen adds, as a values query names them.
WORKER_SEEN_FIELDS = ("worker_seen_at", "worker_seen_by")


def outposts_with_worker_seen(*, outposts: QuerySet[Outpost]) -> QuerySet[Outpost]:
    """The Outposts, each annotated with its queue's last stamp (``worker_seen_at``,
    ``worker_seen_by``), in the same query: the admin list reads it without a query a row."""
    from outposts.models import WorkerHeartbeat

    # Outpost.celery_queue in SQL: the queue, or outpost.<slug> when it is empty.
    queue = Coalesce(
        NullIf("queue", Value("")), Concat(Value("outpost."), "slug"), output_field=CharField()
    )
    stamps = WorkerHeartbeat.objects.filter(queue=OuterRef("worker_queue"))
    return outposts.annotate(
        worker_queue=queue,
        worker_seen_at=Subquery(stamps.values("last_seen_at")[:1]),
        worker_seen_by=Subquery(stamps.values("hostname")[:1]),
    )


def outpost_worker_seen_annotated(*, outpost: Outpost) -> WorkerSeen:
    """The WorkerSeen of an Outpost from ``outposts_with_worker_seen``, else read now."""
    if not hasattr(outpost, "worker_seen_at"):
        return outpost_worker_seen(outpost=outpost)
    return WorkerSeen(
        queue=outpost.celery_queue,
        last_seen_at=outpost.worker_seen_at,
        hostname=outpost.worker_seen_by or "",
    )


def worker_seen_text(*, seen: WorkerSeen) -> str:
    """How the admin says it: live or not, since when, and which worker stamped last."""
    age = seen.age
    if age is None:
        return "no: never seen"
    if seen.live:
        return f"yes: seen {_duration(age)} ago ({seen.hostname})"
    return f"no: not seen for {_duration(age)} (last {seen.hostname})"


def _duration(age: timedelta) -> str:
    seconds = max(0, int(age.total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 2 * 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


ABSENCE_PREFIX = "No worker for Outpost "


def outpost_worker_absence(*, outpost: Outpost) -> str | None:
    """What to tell a user whose start waits for an Outpost with no live worker, or None.
    Reads the stamp unless the Outpost comes annotated (outposts_with_worker_seen)."""
    seen = outpost_worker_seen_annotated(outpost=outpost)
    if seen.live:
        return None
    if seen.age is None:
        return (
            f"{ABSENCE_PREFIX}{outpost.name} has been seen yet; "
            f"the start waits in its queue ({seen.queue})."
        )
    minutes = max(1, int(seen.age.total_seconds() // 60))
    unit = "minute" if minutes == 1 else "minutes"
    return (
        f"{ABSENCE_PREFIX}{outpost.name} has been seen for {minutes} {unit}; "
        f"the start waits in its queue ({seen.queue})."
    )


def waiting_starts_tell_absence() -> int:
    """Tell every start still waiting for a worker on an Outpost with none live (beat's round
    calls this), so that a worker that went away after admission leaves no start silent.
    Each start is told once; returns how many were told."""
    from outposts import callbacks
    from outposts.models import Outpost, Server

    told = 0
    waiting = Server.objects.filter(status=Server.Status.REQUESTED).exclude(
        events__message__startswith=ABSENCE_PREFIX
    )
    for outpost in Outpost.objects.filter(pk__in=waiting.values("outpost_id")):
        absence = outpost_worker_absence(outpost=outpost)
        if absence is None:
            continue
        for server in waiting.filter(outpost=outpost):
            callbacks.server_record_event(server=server, progress=10, message=absence)
            told += 1
    return told


class WorkerHeartbeatStep(bootsteps.StartStopStep):
    """A consumer step of every portal worker: stamps the queues it consumes from while it runs.

    A thread of its own rather than the consumer's timer: with Redis the timer runs in the
    event loop, where a slow database would stall the consumption of tasks.
    """

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, parent: Any) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(parent, self._stop), name="worker-heartbeat", daemon=True
        )
        self._thread.start()

    def stop(self, parent: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    shutdown = stop

    def _run(self, consumer: Any, stop: threading.Event) -> None:
        try:
            while True:
                # Read each time: queues can be added to a running worker (add_consumer).
                queues = sorted({queue.name for queue in consumer.task_consumer.queues})
                close_old_connections()
                try:
                    worker_heartbeat_record(queues=queues, hostname=consumer.hostname)
                except DatabaseError:
                    # A database that blinks costs one stamp, not the heartbeat.
                    log.warning("Could not record this worker's heartbeat", exc_info=True)
                if stop.wait(settings.WORKER_HEARTBEAT_INTERVAL):
                    return
        finally:
            connection.close()
