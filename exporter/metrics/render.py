"""MetricsRenderer: the /metrics body, re-rendered only when the store has changed.

The store changes only when a diagnostic, a run count or a sweep fact lands, so the
exposition is cached under the store's generation. Rendering 100 instances (~20k series)
costs several times a scrape's budget, so either the scrape that first sees a new
generation renders it, or a background watcher (start()) renders it soon after it appears
and scrapes only read bytes. A failing store never fails a scrape: the last good output is
served.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from exporter.config import Config
from exporter.metrics.collector import UltrabaseCollector
from exporter.metrics.snapshot import MetricsSnapshot, MetricsSource

log = logging.getLogger(__name__)


class MetricsRenderer:
    """Renders registry (holding an UltrabaseCollector over source) once per store generation.

    The registry must hold only collectors whose output depends on the source alone
    (hence a registry of its own, not prometheus_client's global one): anything else in
    it would be frozen between store changes.
    """

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, source: MetricsSource, registry: CollectorRegistry | None = None,
                 config: Config | None = None) -> None:
        self._source = source
        self._registry = registry if registry is not None else CollectorRegistry()
        self._collector = UltrabaseCollector(source, self._registry, config=config)
        self._lock = threading.Lock()
        self._generation: int | None = None
        self._output: bytes | None = None
        self._failing = False
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def render(self) -> bytes:
        """The exposition for one scrape; never raises because of the source."""
        if self._thread is not None and self._output is not None:
            return self._output  # the watcher keeps it current
        self.refresh()
        return self._output if self._output is not None else self._unknown()

    def refresh(self) -> bool:
        """Re-render if the source's generation changed; True when new output was made."""
        with self._lock:
            try:
                # Read before rendering: a change racing with the render is seen next time.
                generation = self._source.generation()
                if generation == self._generation and self._output is not None:
                    return False
                output = generate_latest(self._registry)
            except Exception as exc:
                # sqlite's "database is locked" and the like: keep serving the last output.
                if not self._failing:
                    log.warning("metrics: the store cannot be read (%s: %s); serving the "
                                "last good output", type(exc).__name__, exc)
                self._failing = True
                return False
            if self._failing:
                log.warning("metrics: the store is readable again")
                self._failing = False
            self._generation, self._output = generation, output
            return True

    def start(self, interval_seconds: float = 2.0) -> None:
        """Watch the source in a background thread and re-render when it changes.

        Scrapes then only read bytes, at most interval_seconds plus one render behind the
        store; during a sweep (one store change per instance) it renders once per interval
        rather than once per change.
        """
        if self._thread is not None:
            return
        stop = threading.Event()
        thread = threading.Thread(target=self._watch, args=(stop, interval_seconds),
                                  name="metrics-renderer", daemon=True)
        self._stop, self._thread = stop, thread
        thread.start()

    def stop(self) -> None:
        """Stop the watcher (scrapes render on demand again)."""
        if self._stop is not None and self._thread is not None:
            self._stop.set()
            self._thread.join()
        self._stop = self._thread = None

    def _watch(self, stop: threading.Event, interval_seconds: float) -> None:
        self.refresh()
        while not stop.wait(interval_seconds):
            self.refresh()

    def _unknown(self) -> bytes:
        """Output when the source has never been readable: every family, no instance."""
        registry = CollectorRegistry()
        registry.register(_Fixed(self._collector.families(MetricsSnapshot())))
        return generate_latest(registry)


class _Fixed(Collector):
    """A collector of given families."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        """The given families."""
        return self._families
