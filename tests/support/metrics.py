"""Reading the portal's metrics in tests: the counts as stored, and /metrics as scraped."""

from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families

from monitoring.models import MetricCount

#: A token for the tests' /metrics (PORTAL_METRICS_TOKEN must be 24 characters or more).
METRICS_TOKEN = "tests-only-metrics-token-0123456789"

Labels = tuple[tuple[str, str], ...]


def metric_values(name: str) -> dict[Labels, float]:
    """The stored counts of ``name`` (MetricCount rows), by their sorted label pairs."""
    return {
        tuple(sorted(json.loads(row.labels).items())): row.value
        for row in MetricCount.objects.filter(name=name)
    }


def scraped(text: str) -> dict[str, dict[Labels, float]]:
    """A /metrics answer as {sample name: {sorted label pairs: value}}."""
    samples: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


def scrape(client, token: str = METRICS_TOKEN) -> dict[str, dict[Labels, float]]:
    """GET /metrics with the token through Django's test client; fails unless it is 200."""
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200, response.content
    return scraped(response.content.decode())
