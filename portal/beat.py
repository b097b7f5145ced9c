"""Celery beat's scheduler: Celery's own, which also makes the folder of its schedule file."""

from __future__ import annotations

import os
from typing import Any

from celery import beat


class PersistentScheduler(beat.PersistentScheduler):
    """Celery's shelve-backed scheduler that creates the schedule file's folder first.

    PORTAL_DATA_DIR is made by the embedded defaults only; with DATABASE_URL and
    CELERY_BROKER_URL both set, beat on a fresh checkout would otherwise die opening
    ``var/celerybeat-schedule``.
    """

    def _open_schedule(self) -> Any:
        os.makedirs(os.path.dirname(os.path.abspath(self.schedule_filename)), exist_ok=True)
        return super()._open_schedule()
