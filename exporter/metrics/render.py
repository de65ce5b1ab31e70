"""MetricsRenderer: the /metrics body, kept per metric family and per instance.

The store changes when a diagnostic, a run count, the instance list or a sweep fact lands.
Most changes are one instance's new diagnostic, so the exposition is kept in pieces: the
HELP and TYPE lines of every family, each instance's samples of every per-instance family
(from its registry record and from its latest diagnostic, each rendered when it changes),
and the few fleet-wide families (ultrabase_up, the counters), rendered whole. A new
generation costs one small read of what changed (Store.snapshot(since=...)), a render of the
changed instances' diagnostics only, and one join of the cached pieces into the next body;
the result is byte for byte what one full render of the same store gives. The pieces are
made by prometheus_client's own exposition writer from families the collector builds
fresh from a snapshot of one instance, so nothing of the text format is written here.

A background watcher (start()) renders each new generation off the request path, and a
scrape takes whichever complete body was made last: one reference, swapped whole. Without
the watcher (tests, the CLI), the scrape that first sees a new generation renders it. A
failing store never fails a scrape: the last good output is served.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from exporter.config import Config
from exporter.metrics.collector import UltrabaseCollector
from exporter.metrics.families import Refresh
from exporter.metrics.snapshot import InstanceLabels, MetricsSnapshot, MetricsSource, newest
from exporter.store import InstanceInfo, StoreSnapshot

log = logging.getLogger(__name__)

# One instance's samples of each per-instance family, in the layout's order.
Samples = tuple[bytes, ...]
# A digest of what one family of one instance was last rendered from, and the lines it
# gave: a family whose samples are the same next time is not written again (most of a new
# diagnostic's families, the components' and the issues', repeat the last one's). A digest,
# not the samples: keeping every instance's samples would double the memory at 1,000.
Rendered = Mapping[str, tuple[int, bytes]]
# The instance_id label of a sample line. Label values are escaped in the exposition
# (`\"`), so this cannot match text inside another label's value.
_INSTANCE_LABEL = re.compile(rb'[{,]instance_id="([^"\\]*)"')


class MetricsRenderer:
    """Keeps the exposition of source current, re-rendering only what each change touched."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, source: MetricsSource, config: Config | None = None) -> None:
        self._source = source
        self._collector = UltrabaseCollector(source, config=config)
        self._budget = Refresh.from_config(config).auto_repair_budget
        self._layout = _Layout.of(self._collector)
        self._lock = threading.Lock()  # one refresh at a time; scrapes never take it
        # The pieces and the body made of them, replaced whole by each refresh (never
        # changed in place), so a scrape reads one complete body or the one before it.
        self._blank = _State.empty(self._collector)
        self._state = self._blank
        # Every family, no instance: the body until the source has been read once.
        self._empty = self._blank.assemble(self._layout)
        self._failing = False
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def render(self) -> bytes:
        """The exposition for one scrape; never raises because of the source.

        With the watcher running this only reads a reference: no store read, no render.
        """
        if self._thread is None:
            self.refresh()
        output = self._state.output
        return output if output is not None else self._empty

    def refresh(self) -> bool:
        """Re-render what changed if the source's generation moved; True when the body did."""
        with self._lock:
            try:
                # A cheap probe first: most polls find nothing new.
                known = self._state
                generation = self._source.generation()
                # An exhausted auto-repair budget frees up as time passes, with no write
                # to the store: its series go stale then and are read again.
                frees_at = known.fleet_snapshot.budget_frees_at(self._budget) \
                    if known.fleet_snapshot is not None else None
                if known.output is not None and generation == known.generation and \
                        (frees_at is None or time.time() < frees_at):
                    return False
                # Generations only grow: a lower one is another store (a file restored or
                # replaced), whose changes cannot be told from ours, so start over.
                base = known if known.generation is not None and \
                    generation > known.generation else self._blank
                content = self._source.snapshot(since=base.generation)
                state = base.update(content, self._layout, self._collector)
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
            self._state = state
            return state.output is not known.output

    def start(self, interval_seconds: float = 2.0) -> None:
        """Render now, then watch the source in a background thread and re-render changes.

        The first render happens here, before the caller serves anything, so no scrape
        waits for it and none sees an exposition without instances. After that, scrapes
        only read the last body, at most interval_seconds plus one render behind the store.
        """
        if self._thread is not None:
            return
        self.refresh()
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
        while not stop.wait(interval_seconds):
            self.refresh()


@dataclass(frozen=True)
class _Slot:
    """One family of the exposition, in output order."""

    name: str
    # Per-instance families: the family's HELP and TYPE lines and its index in Samples.
    # Fleet-wide families (index None) are rendered whole, header included.
    header: bytes
    index: int | None


@dataclass(frozen=True)
class _Layout:
    """The families in the order a full render writes them."""

    slots: tuple[_Slot, ...]
    per_instance: tuple[str, ...]  # names of the per-instance families, by Samples index

    @classmethod
    def of(cls, collector: UltrabaseCollector) -> _Layout:
        """The collector's families, without reading its source."""
        empty = MetricsSnapshot()
        per_instance = tuple(f.name for f in collector.families(empty, per_instance=True))
        index = {name: i for i, name in enumerate(per_instance)}
        slots = tuple(
            _Slot(f.name, _text(f), index.get(f.name)) if f.name in index
            else _Slot(f.name, b"", None)
            for f in collector.families(empty))
        return cls(slots, per_instance)

    @property
    def none(self) -> Samples:
        """No samples of any per-instance family."""
        return (b"",) * len(self.per_instance)

    def samples(self, families: Iterable[Metric]) -> Samples:
        """The sample lines of each per-instance family among families."""
        return self.rendered(families, {})[0]

    def rendered(self, families: Iterable[Metric], known: Rendered
                 ) -> tuple[Samples, dict[str, tuple[int, bytes]]]:
        """samples(families), reusing the lines of a family whose samples are in known."""
        found: dict[str, tuple[int, bytes]] = {}
        headers = {s.name: s.header for s in self.slots if s.index is not None}
        for family in families:
            header = headers.get(family.name)
            if header is None or not family.samples:
                continue
            digest = _digest(family.samples)
            before = known.get(family.name)
            if before is not None and before[0] == digest:
                found[family.name] = before
                continue
            text = _text(family)
            # The header depends on the family's name, type and HELP text only, all fixed.
            if text.startswith(header):
                found[family.name] = (digest, text[len(header):])
            else:
                log.error("metrics: family %s changed its HELP or TYPE; its series of "
                          "this instance are left out", family.name)
        lines = tuple(found[name][1] if name in found else b"" for name in self.per_instance)
        return lines, found


@dataclass(frozen=True)
class _State:
    """The cached pieces behind one body, and that body."""

    generation: int | None
    records: Mapping[str, tuple[InstanceLabels, Samples]]  # from the instance list
    diagnostics: Mapping[str, Samples]  # from each instance's latest diagnostic
    rendered: Mapping[str, Rendered]  # what each instance's diagnostic pieces came from
    parts: Mapping[str, Samples]  # the two above joined, per instance
    fleet_snapshot: MetricsSnapshot | None
    fleet: Mapping[str, bytes]  # fleet-wide family name -> its whole text
    output: bytes | None

    @classmethod
    def empty(cls, collector: UltrabaseCollector) -> _State:
        """Nothing read yet; fleet-wide families as for an empty store."""
        empty = MetricsSnapshot()
        return cls(None, {}, {}, {}, {}, empty, _fleet(empty, collector), None)

    def update(self, content: StoreSnapshot, layout: _Layout,
               collector: UltrabaseCollector) -> _State:
        """The state after content (read with since=self.generation) arrived."""
        records, touched = self._records(content.instances, layout, collector)
        diagnostics, rendered, changed = self._diagnostics(content, layout, collector)
        touched |= changed
        parts = dict(self.parts)
        for iid in touched:
            record, diagnostic = records.get(iid), diagnostics.get(iid)
            if record is None and diagnostic is None:
                parts.pop(iid, None)
            else:
                parts[iid] = tuple(a + b for a, b in zip(
                    record[1] if record else layout.none, diagnostic or layout.none,
                    strict=True))
        fleet_snapshot = MetricsSnapshot.build((), (), content.run_counts,
                                               content.operation_counts, content.meta,
                                               content.auto_repairs)
        fleet = self.fleet
        if fleet_snapshot != self.fleet_snapshot:
            fleet = _fleet(fleet_snapshot, collector)
        state = replace(self, generation=content.generation, records=records,
                        diagnostics=diagnostics, rendered=rendered, parts=parts,
                        fleet_snapshot=fleet_snapshot,
                        fleet=fleet)
        if touched or fleet is not self.fleet or self.output is None:
            state = replace(state, output=state.assemble(layout))
        return state

    def _records(self, instances: Iterable[InstanceInfo], layout: _Layout,
                 collector: UltrabaseCollector,
                 ) -> tuple[dict[str, tuple[InstanceLabels, Samples]], set[str]]:
        """The instance list's pieces: kept where the labels are the same; the ids that
        arrived, left or changed."""
        labels = {lab.id: lab for lab in map(InstanceLabels.of, instances)}
        touched = {iid for iid in self.records if iid not in labels}
        records: dict[str, tuple[InstanceLabels, Samples]] = {}
        for iid, lab in labels.items():
            known = self.records.get(iid)
            if known is not None and known[0] == lab:
                records[iid] = known
            else:
                families = collector.families(MetricsSnapshot(instances=(lab,)),
                                              per_instance=True)
                records[iid] = (lab, layout.samples(families))
                touched.add(iid)
        return records, touched

    def _diagnostics(self, content: StoreSnapshot, layout: _Layout,
                     collector: UltrabaseCollector,
                     ) -> tuple[dict[str, Samples], dict[str, Rendered], set[str]]:
        """The diagnostics' pieces: the changed ones rendered, the rest kept; what they
        were rendered from; the ids of those changed or gone."""
        since, present = self.generation, content.latest_generations
        touched = {iid for iid in self.diagnostics if iid not in present}
        diagnostics = {iid: s for iid, s in self.diagnostics.items() if iid in present}
        rendered = {iid: r for iid, r in self.rendered.items() if iid in present}
        fresh = newest(content.latest)
        for iid, generation in present.items():
            if since is not None and generation <= since:
                continue
            touched.add(iid)
            diagnostic = fresh.get(iid)
            if diagnostic is None:  # unreadable: the store skipped it, so does a full render
                diagnostics.pop(iid, None)
                rendered.pop(iid, None)
                continue
            families = collector.families(MetricsSnapshot(diagnostics=(diagnostic,)),
                                          per_instance=True)
            diagnostics[iid], rendered[iid] = layout.rendered(families,
                                                              self.rendered.get(iid, {}))
        return diagnostics, rendered, touched

    def assemble(self, layout: _Layout) -> bytes:
        """The exposition: every family in order, its samples instance by instance."""
        # By family: the samples of every instance, in the order of their ids.
        columns: Sequence[Sequence[bytes]] = list(zip(
            *(self.parts[iid] for iid in sorted(self.parts)), strict=True)) or \
            [()] * len(layout.per_instance)
        chunks: list[bytes] = []
        for slot in layout.slots:
            if slot.index is None:
                # Absent when its group failed: left out, as a full render leaves it.
                chunks.append(self.fleet.get(slot.name, b""))
            else:
                chunks.append(slot.header)
                chunks.extend(columns[slot.index])
        # bytes.join copies a result this large without holding the GIL: scrapes go on.
        return b"".join(chunks)


def _fleet(snapshot: MetricsSnapshot, collector: UltrabaseCollector) -> dict[str, bytes]:
    """The fleet-wide families of snapshot, each as its whole text."""
    return {f.name: _text(f) for f in collector.families(snapshot, per_instance=False)}


def _digest(samples: Sequence[Sample]) -> int:
    """What a family's lines are made of: names, labels in order, values and timestamps."""
    # Label order is part of the text, so the labels go in as ordered pairs.
    return hash(tuple((s.name, tuple(s.labels.items()), s.value, s.timestamp)
                      for s in samples))


def _text(family: Metric) -> bytes:
    """family in the Prometheus text format, by prometheus_client's own writer."""
    return generate_latest(_Fixed((family,)))


class _Fixed(Collector):
    """A collector of given families."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        """The given families."""
        return self._families


def only_instances(output: bytes, instances: Container[str]) -> bytes:
    """The exposition without the series of instances outside `instances`.

    HELP and TYPE lines and series about no instance (ultrabase_up, counters) stay.
    """
    kept: list[bytes] = []
    for line in output.splitlines(keepends=True):
        if not line.startswith(b"#"):
            found = _INSTANCE_LABEL.search(line)
            if found is not None and found.group(1).decode("utf-8", "replace") not in instances:
                continue
        kept.append(line)
    return b"".join(kept)
