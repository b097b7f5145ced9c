"""Celery beat's scheduler: Celery's own, which also makes the folder of its schedule file."""

from __future__ import annotations

import os
from typing import Any

from celery import beat, bootsteps


class PersistentScheduler(beat.PersistentScheduler):
    """Celery's shelve-backed scheduler that creates the schedule file's folder first.

    PORTAL_DATA_DIR is made by the embedded defaults only; with DATABASE_URL and
    CELERY_BROKER_URL both set, beat on a fresh checkout would otherwise die opening
    ``var/celerybeat-schedule``.
    """

    def _open_schedule(self) -> Any:
        os.makedirs(os.path.dirname(os.path.abspath(self.schedule_filename)), exist_ok=True)
        return super()._open_schedule()


class BeatThread(bootsteps.StartStopStep):
    """A worker step that runs beat in a thread of the worker (``--beat-thread``).

    For ``runportal``: beat as a process of its own imported Django a second time (about
    80 MiB idle, bench/README.md) to send one task every RECONCILE_INTERVAL. Celery's own
    ``-B`` forks a process instead, which a killed worker leaves behind (two beats after the
    supervisor restarts it); a thread ends with its worker and restarts with it.
    """

    label = "BeatThread"
    conditional = True

    def __init__(self, parent: Any, beat_thread: bool = False, **kwargs: Any) -> None:
        self.enabled = beat_thread
        super().__init__(parent, **kwargs)

    def create(self, parent: Any) -> Any:
        return beat.EmbeddedService(
            parent.app,
            thread=True,
            schedule_filename=parent.app.conf.beat_schedule_filename,
            scheduler_cls=parent.app.conf.beat_scheduler,
        )
