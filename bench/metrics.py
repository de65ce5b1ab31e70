"""/metrics scrape latency and exporter memory with 100 instances and full history.

Fills a real exporter.store.Store in a temporary directory (in a child process, so the
filling does not count towards this process's memory) with N instances x H diagnostics
(13 components, 8 checks, a few issues on every tenth instance), then scrapes through
MetricsRenderer S times with a new diagnostic saved every K scrapes: first with renders on
the scrape path, then with the renderer's background watcher. Prints a table; writes
nothing into the tree. Run: python -m bench.metrics [--instances 100] [--history 100]
[--scrapes 400] [--every 20] [--interval 0.5]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

import exporter.service  # noqa: F401  (the exporter's own imports, so memory compares)
from exporter.metrics import MetricsRenderer, MetricsSnapshot, UltrabaseCollector
from exporter.store import InstanceInfo, Store
from tests.unit.metrics.samples import NOW, diagnostic

GOAL_P99_MS = 50.0
GOAL_RSS_MB = 100.0
SWEEP_SECONDS = 300


def _ids(count: int) -> list[str]:
    return [f"inst-{i:03d}" for i in range(count)]


def fill(path: Path, instances: int, history: int) -> None:
    """Save history diagnostics per instance, oldest first, plus instances, meta, counts."""
    with Store(path, history_limit=history) as store:
        for n, instance_id in enumerate(_ids(instances)):
            template = diagnostic(instance_id, broken=n % 10 == 0)
            for k in range(history):
                at = NOW - timedelta(seconds=SWEEP_SECONDS * (history - k))
                store.save(replace(template, timestamp=at))
        store.set_instances([InstanceInfo(i, f"Project {i}", f"owner{n % 7}")
                             for n, i in enumerate(_ids(instances))])
        for trigger, result in (("scheduled", "healthy"), ("scheduled", "unhealthy"),
                                ("on_demand", "healthy"), ("operation", "healthy")):
            store.record_run(trigger, result)
        store.record_operation("safe_restart", "success")
        store.set_meta("docker_ok", "1")
        store.set_meta("sweep_duration_seconds", "4.200")


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def memory_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Scrapes:
    """Latencies (ms) of scrapes, split by whether the store had changed before them."""

    cached: list[float]
    changed: list[float]
    outputs: int  # distinct outputs served

    @property
    def all(self) -> list[float]:
        """Every latency."""
        return self.cached + self.changed


def scrape(store: Store, renderer: MetricsRenderer, ids: Sequence[str], count: int, every: int,
           pace: float, start: int) -> Scrapes:
    """count scrapes, saving a new diagnostic of the next instance before every every-th."""
    result = Scrapes([], [], 0)
    last: bytes | None = None
    for n in range(count):
        changed = n > 0 and n % every == 0
        if changed:
            step = start + n // every
            store.save(diagnostic(ids[step % len(ids)], broken=step % 3 == 0,
                                  at=NOW + timedelta(seconds=step)))
        began = time.perf_counter()
        if pace:
            # The scrape arrives at `began`; waiting for the GIL after the sleep (held by
            # the watcher while it renders) counts towards its latency.
            began += pace
            time.sleep(pace)
        output = renderer.render()
        elapsed = (time.perf_counter() - began) * 1000
        (result.changed if changed else result.cached).append(elapsed)
        if output is not last:
            result.outputs += 1
            last = output
    return result


class _Families(Collector):
    """Already built families, to time the exposition alone."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        """The families."""
        return self._families


def breakdown(store: Store) -> tuple[float, float, float]:
    """Median ms of one re-render's parts: store read, families, exposition."""
    collector = UltrabaseCollector(store)
    read, build, expose = [], [], []
    for _ in range(5):
        t0 = time.perf_counter()
        snapshot = MetricsSnapshot.take(store)
        t1 = time.perf_counter()
        families = collector.families(snapshot)
        t2 = time.perf_counter()
        generate_latest(_Families(families))
        t3 = time.perf_counter()
        read.append((t1 - t0) * 1000)
        build.append((t2 - t1) * 1000)
        expose.append((t3 - t2) * 1000)
    return percentile(read, 0.5), percentile(build, 0.5), percentile(expose, 0.5)


def row(label: str, values: Sequence[float], goal: str = "") -> str:
    """One table row."""
    return (f"{label:<34} {len(values):>7} {percentile(values, 0.5):>8.2f} "
            f"{percentile(values, 0.99):>8.2f}  {goal}")


def verdict(p99: float) -> str:
    """The goal column."""
    return f"p99 < {GOAL_P99_MS:g} ms: {'met' if p99 < GOAL_P99_MS else 'MISSED'}"


def main() -> int:
    """Fill the store, run both scrape modes and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--history", type=int, default=100)
    parser.add_argument("--scrapes", type=int, default=400, help="per mode (at least 200)")
    parser.add_argument("--every", type=int, default=20, help="scrapes per store change")
    parser.add_argument("--interval", type=float, default=0.5,
                        help="watcher interval in seconds for the second mode")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ubd-bench-metrics-") as tmp:
        path = Path(tmp) / "store.sqlite3"
        print(f"filling {path} with {args.instances} x {args.history} diagnostics ...",
              file=sys.stderr)
        began = time.monotonic()
        child = multiprocessing.get_context("spawn").Process(
            target=fill, args=(path, args.instances, args.history))
        child.start()
        child.join()
        if child.exitcode != 0:
            print("filling the store failed", file=sys.stderr)
            return 1
        print(f"filled in {time.monotonic() - began:.0f} s", file=sys.stderr)
        ids = _ids(args.instances)
        with Store(path, history_limit=args.history) as store:
            renderer = MetricsRenderer(store)
            output = renderer.render()
            series = sum(1 for line in output.splitlines() if not line.startswith(b"#"))
            size = len(output)
            del output
            on_scrape = scrape(store, renderer, ids, args.scrapes, args.every, 0.0, 0)
            del renderer
            watched = MetricsRenderer(store)
            watched.start(args.interval)
            try:
                # Paced so the watcher's renders overlap the scrapes they must not slow.
                background = scrape(store, watched, ids, args.scrapes, args.every,
                                    args.interval / args.every, args.scrapes)
            finally:
                watched.stop()
            # Measured here: one renderer, as the exporter runs it, after 800 scrapes.
            rss, peak = memory_mb("VmRSS"), memory_mb("VmHWM")
            read, build, expose = breakdown(store)

    print(f"\n/metrics: {args.instances} instances x {args.history} diagnostics in a real "
          f"store; {series} series, {size / 1e6:.1f} MB per scrape; a store change "
          f"every {args.every} scrapes")
    print(f"{'scrapes':<34} {'count':>7} {'p50 ms':>8} {'p99 ms':>8}  goal")
    print(row("cached (render on scrape)", on_scrape.cached))
    print(row("re-rendered (render on scrape)", on_scrape.changed))
    print(row("all (render on scrape)", on_scrape.all, verdict(percentile(on_scrape.all, 0.99))))
    print(row(f"all (watcher every {args.interval:g} s)", background.all,
              verdict(percentile(background.all, 0.99))))
    print(f"re-render parts (median ms): store read {read:.1f}, families {build:.1f}, "
          f"exposition {expose:.1f}; watcher mode served {background.outputs} outputs")
    print(f"resident memory: VmRSS {rss:.1f} MB (peak VmHWM {peak:.1f} MB), goal < "
          f"{GOAL_RSS_MB:g} MB: {'met' if rss < GOAL_RSS_MB else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
