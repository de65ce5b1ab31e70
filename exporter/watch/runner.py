"""The exporter's watch: the event stream and the quick probe, built and run together."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.config import WatchConfig
from exporter.engine import DiagnosticsEngine
from exporter.watch.events import EventWatch
from exporter.watch.probe import QuickProbe
from exporter.watch.status import MetaStore, WatchStatus


@dataclass
class Watch:
    """The parts config.watch switches on, and their shared status."""

    status: WatchStatus
    events: EventWatch | None = None
    probe: QuickProbe | None = None

    @classmethod
    def build(cls, engine: DiagnosticsEngine, config: WatchConfig,
              store: MetaStore | None) -> Watch:
        """The parts that are on; nothing runs yet (the probe runs as a scheduler job)."""
        status = WatchStatus(store)
        return cls(status,
                   EventWatch(engine, config, status) if config.events else None,
                   QuickProbe(engine, status) if config.probe else None)

    def start(self) -> None:
        """Forget a previous process's states, then follow the event stream."""
        self.status.clear()
        if self.events is not None:
            self.events.start()

    def close(self) -> None:
        """Stop following events; release the probe's pool and HTTP client."""
        if self.events is not None:
            self.events.stop()
        if self.probe is not None:
            self.probe.close()
