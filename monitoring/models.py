"""What the metrics count across processes: one row per counter series or histogram part."""

from __future__ import annotations

from django.db import models


class MetricCount(models.Model):
    """One running total of a metric for one set of labels, kept by every portal process.

    A counter is one row; a histogram of ``name`` is ``name_bucket`` rows (one per upper
    bound, in the label ``le``, each counting only its own observations), ``name_sum`` and
    ``name_count``. Rows only grow (monitoring/services.py adds to them); /metrics reads them
    all at a scrape (monitoring/collectors.py).

    Why in the database: starts are admitted and refused in every web process, servers
    become ready and rounds end in workers on other hosts (a Slurm login node) that nobody
    scrapes. All of them reach the database, and a count written in a start's transaction is
    rolled back with it.
    """

    name = models.CharField(max_length=100)
    #: The label pairs as JSON with sorted keys: one spelling per series.
    labels = models.CharField(max_length=500, default="{}")
    value = models.FloatField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["name", "labels"], name="metric_count_unique_series")
        ]

    def __str__(self) -> str:
        return f"{self.name}{self.labels} = {self.value:g}"
