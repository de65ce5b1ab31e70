"""Gateway endpoint latency, from the api_endpoints check."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import Metric

from exporter.checks.base import entries
from exporter.checks.endpoints import API_ENDPOINTS
from exporter.metrics.families import Refresh, Row, details, gauge, number
from exporter.metrics.snapshot import MetricsSnapshot


def families(snapshot: MetricsSnapshot, refresh: Refresh) -> list[Metric]:
    """ultrabase_endpoint_latency_seconds (absent for an endpoint that did not answer)."""
    return [gauge("ultrabase_endpoint_latency_seconds",
                  refresh.cached("Seconds the gateway route took to answer (no series when it "
                                 "did not answer)"),
                  ("instance_id", "endpoint"), _latencies(snapshot))]


def _latencies(snapshot: MetricsSnapshot) -> Iterator[Row]:
    for d in snapshot.diagnostics:
        for endpoint, entry in entries(details(d, API_ENDPOINTS).get("endpoints")):
            latency = number(entry.get("latency_seconds"))
            if latency is not None:
                yield (d.instance_id, endpoint), latency
