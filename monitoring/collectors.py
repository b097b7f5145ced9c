"""The Prometheus collectors of /metrics: everything is read when Prometheus scrapes.

``DatabaseCollector`` reads the servers, tunnels, worker stamps and the counts every process
keeps in MetricCount (services.py); ``QueueCollector`` asks the broker. Names and labels are
listed in docs/monitoring.md.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from monitoring import selectors, services
from monitoring.models import MetricCount
from monitoring.queues import broker_connection, queues_read

log = logging.getLogger(__name__)

COUNTERS = {
    services.STARTS_ADMITTED: ("Starts admitted, by Outpost and flavor.", ["outpost", "flavor"]),
    services.STARTS_REFUSED: ("Starts refused, by Outpost and reason.", ["outpost", "reason"]),
    services.HUB_CALLBACK_FAILURES: (
        "Calls to Hubs that failed (each attempt), by reason: unreachable or refused.",
        ["reason"],
    ),
}
HISTOGRAMS = {
    services.START_READY_SECONDS: (
        "Seconds from a start's admission until its server was ready, by Outpost.",
        ["outpost"],
    ),
    services.RECONCILE_ROUND_SECONDS: (
        "Seconds one reconciler round of an Outpost took, by Outpost.",
        ["outpost"],
    ),
}


class DatabaseCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        servers = GaugeMetricFamily(
            "portal_servers",
            "Servers not yet stopped or failed, by Outpost, flavor and status.",
            labels=["outpost", "flavor", "status"],
        )
        for row in selectors.servers_active_counted():
            servers.add_metric([row.outpost, row.flavor, row.status], row.count)
        yield servers

        tunnels = GaugeMetricFamily(
            "portal_tunnels",
            "Tunnels that should be open, by Outpost and state (open, pending, failed).",
            labels=["outpost", "state"],
        )
        for outpost, state, count in selectors.tunnels_wanted_counted():
            tunnels.add_metric([outpost, state], count)
        yield tunnels

        workers = GaugeMetricFamily(
            "portal_queue_worker_live",
            "1 if a worker stamped the queue recently (PORTAL_WORKER_SEEN_WITHIN), else 0.",
            labels=["queue"],
        )
        for seen in selectors.workers_seen(queues=selectors.queues_known()):
            workers.add_metric([seen.queue], 1 if seen.live else 0)
        yield workers

        yield from counts_collect(selectors.metric_counts_all())


def counts_collect(rows: list[MetricCount]) -> Iterator[Metric]:
    """The counters and histograms of MetricCount rows (buckets made cumulative here)."""
    by_name: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for row in rows:
        by_name[row.name].append((json.loads(row.labels), row.value))

    for name, (documentation, label_names) in COUNTERS.items():
        family = CounterMetricFamily(name, documentation, labels=label_names)
        for labels, value in by_name.get(name, []):
            family.add_metric([labels.get(label, "") for label in label_names], value)
        yield family

    for name, (documentation, label_names) in HISTOGRAMS.items():
        family = HistogramMetricFamily(name, documentation, labels=label_names)
        series: dict[tuple[str, ...], dict[str, float]] = defaultdict(dict)
        for labels, value in by_name.get(f"{name}_bucket", []):
            key = tuple(labels.get(label, "") for label in label_names)
            series[key][labels["le"]] = value
        sums = {
            tuple(labels.get(label, "") for label in label_names): value
            for labels, value in by_name.get(f"{name}_sum", [])
        }
        for key, buckets in sorted(series.items()):
            cumulative = 0.0
            points = []
            for bound in services.HISTOGRAM_BUCKETS[name]:
                le = floatToGoString(bound)
                cumulative += buckets.get(le, 0.0)
                points.append((le, cumulative))
            assert points[-1][0] == floatToGoString(math.inf)
            family.add_metric(list(key), points, sums.get(key, 0.0))
        yield family


class QueueCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("portal_broker_up", "1 if the broker answered this scrape.")
        depth = GaugeMetricFamily(
            "portal_task_queue_depth", "Task messages waiting in a queue.", labels=["queue"]
        )
        age = GaugeMetricFamily(
            "portal_task_queue_oldest_age_seconds",
            "Seconds the next message of a queue has waited (0 when it is empty).",
            labels=["queue"],
        )
        queues = selectors.queues_known()
        try:
            with broker_connection() as connection:
                states = queues_read(connection=connection, queues=queues)
        # kombu and redis-py raise many kinds; portal_broker_up says so, one line a scrape.
        except Exception as error:  # noqa: BLE001
            log.warning("The broker did not answer the scrape: %s", error.__class__.__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        for state in states:
            depth.add_metric([state.queue], state.depth)
            age.add_metric([state.queue], state.oldest_age or 0.0)
        yield from (up, depth, age)
