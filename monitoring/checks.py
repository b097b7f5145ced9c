"""The readiness checks of /readyz (django-health-check): the database (the library's own
check), the broker, and a live worker for every queue that needs one."""

from __future__ import annotations

import dataclasses

from asgiref.sync import sync_to_async
from health_check.base import HealthCheck
from health_check.exceptions import ServiceUnavailable

from monitoring import selectors
from monitoring.queues import broker_connection


@dataclasses.dataclass
class Broker(HealthCheck):
    """The Celery broker accepts a connection within a few seconds."""

    def run(self) -> None:
        try:
            with broker_connection():
                pass
        except Exception as error:  # kombu and redis-py raise many kinds
            raise ServiceUnavailable(
                f"The broker cannot be reached ({error.__class__.__name__})"
            ) from error


@dataclasses.dataclass
class Workers(HealthCheck):
    """Every queue with work to do has a live worker (outposts/workers.py: the stamps)."""

    async def run(self) -> None:
        # On the request's own thread and database connection, like the rest of the portal.
        missing = await sync_to_async(self._queues_without_worker)()
        if missing:
            raise ServiceUnavailable(f"No live worker for the queue(s) {', '.join(missing)}")

    @staticmethod
    def _queues_without_worker() -> list[str]:
        queues = selectors.queues_needing_workers()
        return [seen.queue for seen in selectors.workers_seen(queues=queues) if not seen.live]
