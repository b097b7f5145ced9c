"""Counting what the metrics report: the small calls the rest of the portal makes.

Each adds to MetricCount rows (models.py says why in the database) with one statement, in the
caller's transaction if there is one: a start that rolls back is not counted. Nothing here
runs on a poll, a list or the flavors: only on starts, refusals, ready servers, reconciler
rounds and failed Hub calls.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from django.db import connection
from prometheus_client.utils import floatToGoString

from monitoring.models import MetricCount

if TYPE_CHECKING:
    from outposts.models import Outpost, Server

STARTS_ADMITTED = "portal_starts_admitted_total"
STARTS_REFUSED = "portal_starts_refused_total"
START_READY_SECONDS = "portal_start_ready_seconds"
RECONCILE_ROUND_SECONDS = "portal_reconcile_round_seconds"
HUB_CALLBACK_FAILURES = "portal_hub_callback_failures_total"

# Upper bounds in seconds. A local process is ready in seconds, a batch job can wait an hour.
START_READY_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, math.inf)
# A round polls its due servers for up to RECONCILE_INTERVAL (30 s), plus a last batch's
# SPAWNER_POLL_TIMEOUT (30 s).
RECONCILE_ROUND_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, math.inf)

HISTOGRAM_BUCKETS = {
    START_READY_SECONDS: START_READY_BUCKETS,
    RECONCILE_ROUND_SECONDS: RECONCILE_ROUND_BUCKETS,
}


def labels_key(labels: Mapping[str, str]) -> str:
    """The one spelling of a label set that MetricCount.labels holds."""
    return json.dumps(dict(labels), sort_keys=True, separators=(",", ":"))


def metric_counts_add(counts: Iterable[tuple[str, Mapping[str, str], float]]) -> None:
    """Add each ``(name, labels, amount)`` to its row, creating it: one statement.

    An upsert that adds (``value = value + excluded.value``), which PostgreSQL and SQLite both
    have and the ORM does not; concurrent writers never lose a count. Rows are written in one
    order, so that two transactions adding to the same rows cannot deadlock.
    """
    merged: dict[tuple[str, str], float] = {}
    for name, labels, amount in counts:
        key = (name, labels_key(labels))
        merged[key] = merged.get(key, 0.0) + float(amount)
    if not merged:
        return
    rows = sorted(merged.items())
    table = connection.ops.quote_name(MetricCount._meta.db_table)
    values = ", ".join(["(%s, %s, %s)"] * len(rows))
    # Only the table name is formatted in; every value is a parameter.
    sql = (
        f"INSERT INTO {table} (name, labels, value) VALUES {values} "  # noqa: S608
        f"ON CONFLICT (name, labels) DO UPDATE SET value = {table}.value + excluded.value"
    )
    params = [item for (name, labels), amount in rows for item in (name, labels, amount)]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def histogram_observe(*, name: str, labels: Mapping[str, str], value: float) -> None:
    """One observation of the histogram ``name``: its bucket, its sum and its count."""
    bound = next(bound for bound in HISTOGRAM_BUCKETS[name] if value <= bound)
    metric_counts_add(
        [
            (f"{name}_bucket", {**labels, "le": floatToGoString(bound)}, 1),
            (f"{name}_sum", labels, value),
            (f"{name}_count", labels, 1),
        ]
    )


def start_admitted_count(*, outpost: Outpost, flavor_name: str) -> None:
    """A start was admitted (call it in the start's transaction)."""
    metric_counts_add([(STARTS_ADMITTED, {"outpost": outpost.slug, "flavor": flavor_name}, 1)])


def start_refused_count(*, outpost: Outpost, reason: str) -> None:
    """A start was refused, for ``reason`` (StartRefused.reason)."""
    metric_counts_add([(STARTS_REFUSED, {"outpost": outpost.slug, "reason": reason}, 1)])


def start_ready_observe(*, server: Server) -> None:
    """A server became ready: how long after its start was admitted."""
    assert server.ready_at is not None, "a server that is ready has ready_at"
    seconds = max(0.0, (server.ready_at - server.created_at).total_seconds())
    histogram_observe(
        name=START_READY_SECONDS, labels={"outpost": server.outpost.slug}, value=seconds
    )


def reconcile_round_observe(*, outpost: Outpost, seconds: float) -> None:
    """A reconciler round of ``outpost`` ended after ``seconds``."""
    histogram_observe(
        name=RECONCILE_ROUND_SECONDS, labels={"outpost": outpost.slug}, value=max(0.0, seconds)
    )


def hub_callback_failure_count(*, reason: str) -> None:
    """A call to a Hub failed: ``unreachable`` (retried) or ``refused`` (given up)."""
    metric_counts_add([(HUB_CALLBACK_FAILURES, {"reason": reason}, 1)])
