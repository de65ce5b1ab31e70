"""Database facts from the database_connection check: connections and size."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from prometheus_client.metrics_core import Metric

from exporter.checks.database import DATABASE_CONNECTION
from exporter.metrics.families import Refresh, Row, details, gauge, number
from exporter.metrics.snapshot import MetricsSnapshot

Fact = Literal["connections", "max_connections", "size_bytes"]
# (metric, details key, what it is)
_FACTS: tuple[tuple[str, Fact, str], ...] = (
    ("ultrabase_db_connections", "connections", "Open connections to the instance's database"),
    ("ultrabase_db_max_connections", "max_connections", "The database's max_connections"),
    ("ultrabase_db_size_bytes", "size_bytes", "Size of the instance's database in bytes"),
)


def families(snapshot: MetricsSnapshot, refresh: Refresh) -> list[Metric]:
    """ultrabase_db_connections, ultrabase_db_max_connections, ultrabase_db_size_bytes."""
    return [gauge(name, refresh.cached(what), ("instance_id",), _fact(snapshot, key))
            for name, key, what in _FACTS]


def _fact(snapshot: MetricsSnapshot, key: Fact) -> Iterator[Row]:
    for d in snapshot.diagnostics:
        value = number(details(d, DATABASE_CONNECTION).get(key))
        if value is not None:
            yield (d.instance_id,), value
