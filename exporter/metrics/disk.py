"""Disk facts from the disk_usage check: the instance's filesystem and volume sizes."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import Metric

from exporter.metrics.families import (
    Refresh,
    Row,
    details,
    entries,
    gauge,
    instance_numbers,
    number,
)
from exporter.metrics.snapshot import MetricsSnapshot

_CHECK = "disk_usage"


def families(snapshot: MetricsSnapshot, refresh: Refresh) -> list[Metric]:
    """ultrabase_volume_size_bytes and ultrabase_filesystem_{avail,size}_bytes."""
    return [
        gauge("ultrabase_volume_size_bytes",
              refresh.cached("Size in bytes of the instance's bind-mounted volume directory "
                             "(no series when it is missing)"),
              ("instance_id", "volume"), _volumes(snapshot)),
        gauge("ultrabase_filesystem_avail_bytes",
              refresh.cached("Bytes available on the filesystem holding the instance's files "
                             "(to unprivileged users)"),
              ("instance_id",),
              instance_numbers(snapshot.diagnostics, _CHECK, "avail_bytes", "filesystem")),
        gauge("ultrabase_filesystem_size_bytes",
              refresh.cached("Size in bytes of the filesystem holding the instance's files"),
              ("instance_id",),
              instance_numbers(snapshot.diagnostics, _CHECK, "size_bytes", "filesystem")),
    ]


def _volumes(snapshot: MetricsSnapshot) -> Iterator[Row]:
    for d in snapshot.diagnostics:
        for volume, entry in entries(details(d, _CHECK).get("volumes")):
            size = number(entry.get("size_bytes"))
            if size is not None:
                yield (d.instance_id, volume), size
