"""Disk facts from the disk_usage check: the instance's filesystem and volume sizes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from prometheus_client.metrics_core import Metric

from exporter.checks.base import entries, part
from exporter.checks.disk import DISK_USAGE
from exporter.metrics.families import (
    Refresh,
    Row,
    details,
    gauge,
    number,
)
from exporter.metrics.snapshot import MetricsSnapshot


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
              _filesystem(snapshot, "avail_bytes")),
        gauge("ultrabase_filesystem_size_bytes",
              refresh.cached("Size in bytes of the filesystem holding the instance's files"),
              ("instance_id",),
              _filesystem(snapshot, "size_bytes")),
    ]


def _volumes(snapshot: MetricsSnapshot) -> Iterator[Row]:
    for d in snapshot.diagnostics:
        for volume, entry in entries(details(d, DISK_USAGE).get("volumes")):
            size = number(entry.get("size_bytes"))
            if size is not None:
                yield (d.instance_id, volume), size



def _filesystem(snapshot: MetricsSnapshot,
                fact: Literal["avail_bytes", "size_bytes"]) -> Iterator[Row]:
    for d in snapshot.diagnostics:
        filesystem = part(details(d, DISK_USAGE).get("filesystem"))
        value = number(filesystem.get(fact)) if filesystem is not None else None
        if value is not None:
            yield (d.instance_id,), value
