"""Parsing helpers for the metrics tests: exposition text to series."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

Series = dict[tuple[tuple[str, str], ...], float]


def parse(output: bytes) -> dict[str, Metric]:
    """The families of an exposition, by family name."""
    return {f.name: f for f in text_string_to_metric_families(output.decode())}


def series(output: bytes, name: str) -> Series:
    """Every sample of family name, keyed by its sorted labels."""
    family = parse(output)[name]
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples}


def value(output: bytes, name: str, **labels: str) -> float | None:
    """The value of the one series of name with exactly labels, or None."""
    return series(output, name).get(tuple(sorted(labels.items())))


def of_instance(found: Series, instance_id: str) -> Mapping[tuple[tuple[str, str], ...], float]:
    """The series of one instance."""
    return {k: v for k, v in found.items() if ("instance_id", instance_id) in k}
