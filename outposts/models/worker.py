"""What workers record: the queues they serve, and the trial starts they run."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from outposts.models.outpost import Outpost


class WorkerHeartbeat(models.Model):
    """When a Celery worker serving this queue was last seen (outposts/workers.py).

    Every running worker stamps the rows of the queues it consumes from, on a timer of its
    own; one row per queue, naming the worker that stamped it last.
    """

    queue = models.CharField(max_length=100, unique=True)
    hostname = models.CharField(max_length=255, help_text="The worker's Celery node name.")
    last_seen_at = models.DateTimeField()

    class Meta:
        ordering = ["queue"]

    def __str__(self) -> str:
        return f"{self.queue}: {self.hostname} at {self.last_seen_at:%Y-%m-%d %H:%M:%S}"


class OutpostTrial(models.Model):
    """One "Try a start" of an Outpost's spawner settings (outposts/trial.py): asked for in
    the admin, run by a worker of the Outpost's queue, where its servers run."""

    outpost = models.ForeignKey(Outpost, on_delete=models.CASCADE, related_name="trials")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    requested_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # What the trial did (trial.TrialResult as JSON); empty until it finished.
    result = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-requested_at"]

    def __str__(self) -> str:
        return f"Trial {self.pk} on {self.outpost_id}"
