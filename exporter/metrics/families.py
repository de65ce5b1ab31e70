"""Shared pieces of the metric groups: family builders, HELP wording and typed detail access."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from exporter.checks.base import D, Family
from exporter.config import Config
from exporter.diagnostic import Diagnostic

# One series: its label values, in the family's label order, and its value.
Row = tuple[Sequence[str], float]

_DEFAULT = Config()


def gauge(name: str, documentation: str, labels: Sequence[str],
          rows: Iterable[Row]) -> GaugeMetricFamily:
    """A gauge family built fresh from rows; a repeated label set keeps its first value."""
    family = GaugeMetricFamily(name, documentation, labels=list(labels))
    _fill(family, rows)
    return family


def counter(name: str, documentation: str, labels: Sequence[str],
            rows: Iterable[Row]) -> CounterMetricFamily:
    """A counter family (exposed as NAME_total) built fresh from rows."""
    family = CounterMetricFamily(name, documentation, labels=list(labels))
    _fill(family, rows)
    return family


def _fill(family: GaugeMetricFamily | CounterMetricFamily, rows: Iterable[Row]) -> None:
    # Prometheus rejects a scrape that repeats a series, so duplicates never reach it.
    seen: set[tuple[str, ...]] = set()
    for labels, value in rows:
        key = tuple(labels)
        if key not in seen:
            seen.add(key)
            family.add_metric(key, value)


@dataclass(frozen=True)
class Refresh:
    """How often the cached diagnostics behind the metrics refresh, for HELP texts."""

    sweep_interval_seconds: float
    cache_ttl_seconds: float
    sweep_enabled: bool = True
    # actions.auto_repair_budget_per_hour, for ultrabase_auto_repair_budget_exhausted.
    auto_repair_budget: int = 3

    @classmethod
    def from_config(cls, config: Config | None) -> Refresh:
        """The refresh policy of config (the defaults when None)."""
        config = config or _DEFAULT
        return cls(config.schedule.sweep_interval_seconds,
                   config.diagnostics.cache_ttl_seconds, config.schedule.enabled,
                   config.actions.auto_repair_budget_per_hour)

    def cached(self, subject: str) -> str:
        """HELP text of a family whose values come from the latest cached diagnostic."""
        if self.sweep_enabled:
            when = (f"refreshed every {self.sweep_interval_seconds:g} s by the scheduled "
                    "sweep or on demand")
        else:
            when = "refreshed on demand only (the scheduled sweep is off)"
        return (f"{subject}, from the latest cached diagnostic (fresh for "
                f"{self.cache_ttl_seconds:g} s); {when}; see "
                "ultrabase_diagnostic_timestamp_seconds for its age")


def number(value: object) -> float | None:
    """value as a float when it is a finite int or float (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    result = float(value)
    return result if math.isfinite(result) else None


def flag(value: object) -> float | None:
    """1.0 or 0.0 for a bool, None for anything else (unknown)."""
    return float(value) if isinstance(value, bool) else None


def details(diagnostic: Diagnostic, family: Family[D]) -> D:
    """A check family's details in the diagnostic, in the shape its check writes them
    (Family.details: read with .get() and check every value with number/flag/part)."""
    return family.details(diagnostic.results.get(family.name))
