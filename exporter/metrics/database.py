"""Database facts from the database_connection check: connections and size."""

from __future__ import annotations

from prometheus_client.metrics_core import Metric

from exporter.metrics.families import Refresh, gauge, instance_numbers
from exporter.metrics.snapshot import MetricsSnapshot

# (metric, details key, what it is)
_FACTS = (
    ("ultrabase_db_connections", "connections", "Open connections to the instance's database"),
    ("ultrabase_db_max_connections", "max_connections", "The database's max_connections"),
    ("ultrabase_db_size_bytes", "size_bytes", "Size of the instance's database in bytes"),
)


def families(snapshot: MetricsSnapshot, refresh: Refresh) -> list[Metric]:
    """ultrabase_db_connections, ultrabase_db_max_connections, ultrabase_db_size_bytes."""
    return [gauge(name, refresh.cached(what), ("instance_id",),
                  instance_numbers(snapshot.diagnostics, "database_connection", key))
            for name, key, what in _FACTS]
