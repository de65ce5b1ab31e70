"""/metrics with many instances: scrape latency, re-render cost and memory, idle and loaded.

Fills a real exporter.store.Store in a temporary directory (in a child process, so the
filling does not count towards this process's memory) with N instances x H diagnostics
(13 components, 8 checks, a few issues on every tenth instance). Then, per run:

- the first render of the whole store (what the exporter does once at start);
- re-render of one changed instance: a new diagnostic saved, then one refresh() timed,
  C times;
- scrapes as served: the renderer's background watcher running (every --interval s),
  S scrapes paced so that they overlap its renders, a new diagnostic saved every K
  scrapes; a scrape's time runs from its arrival until it has the body (render()), so
  waiting for the interpreter while the watcher renders counts; sending it does not;
- the host's floor: the same paced scrapes of a body made once, nothing rendering, so
  what is left is the wait for a CPU after each wake-up, which this process cannot lower.

--load runs everything a second time with a CPU hog (a busy Python loop) on every core
for the whole run, and the table shows both runs, each with the host's load average at
its end. Prints a table; writes nothing into the tree. Run:
python -m bench.metrics [--instances 100] [--history 100] [--load]
"""

from __future__ import annotations

import argparse
import gc
import math
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import exporter.service  # noqa: F401  (the exporter's own imports, so memory compares)
from bench.samples import NOW, diagnostic
from exporter.metrics import MetricsRenderer
from exporter.store import InstanceInfo, Store

SWEEP_SECONDS = 300
HOG = "while True: pass"


@dataclass(frozen=True)
class Goals:
    """The goals for a store of up to `instances` instances (None: no goal)."""

    instances: int
    scrape_idle_ms: float
    scrape_loaded_ms: float | None
    rerender_ms: float | None
    rss_mb: float


GOALS = (Goals(100, 10.0, 50.0, 5.0, 100.0), Goals(1000, 50.0, None, None, 300.0))


def goals_for(instances: int) -> Goals:
    """The goals of the smallest size that holds instances (the largest beyond them)."""
    return next((g for g in GOALS if instances <= g.instances), GOALS[-1])


def _ids(count: int) -> list[str]:
    return [f"inst-{i:04d}" for i in range(count)]


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


@dataclass(frozen=True)
class Run:
    """What one run measured (times in ms)."""

    label: str
    load_average: float
    first_render: float
    rerenders: list[float]
    rerender_cpu: list[float]  # the refreshing thread's CPU time
    scrapes: list[float]
    outputs: int  # distinct bodies the scrapes got
    floor: list[float]  # scrapes of a constant body
    rss: float
    series: int
    size: int


class Changes:
    """New diagnostics, one instance after another, each newer than everything saved."""

    def __init__(self, store: Store, ids: Sequence[str]) -> None:
        self._store, self._ids, self._step = store, ids, 0

    def save(self) -> None:
        """Save the next instance's new diagnostic."""
        self._step += 1
        step = self._step
        self._store.save(diagnostic(self._ids[step % len(self._ids)], broken=step % 3 == 0,
                                    at=NOW + timedelta(seconds=step)))


def rerender(renderer: MetricsRenderer, changes: Changes,
             count: int) -> tuple[list[float], list[float]]:
    """ms of one refresh() after each of count single-instance changes: wall, CPU."""
    wall, cpu = [], []
    for _ in range(count):
        changes.save()
        began, began_cpu = time.perf_counter(), time.thread_time()
        renderer.refresh()
        wall.append((time.perf_counter() - began) * 1000)
        cpu.append((time.thread_time() - began_cpu) * 1000)
    return wall, cpu


def scrape(render: Callable[[], bytes], changes: Changes | None, count: int, every: int,
           pace: float) -> tuple[list[float], int]:
    """count paced scrapes with a change before every every-th; ms each, distinct bodies."""
    times: list[float] = []
    outputs = 0
    last: bytes | None = None
    for n in range(count):
        if changes is not None and n > 0 and n % every == 0:
            changes.save()
        # The scrape arrives when the sleep ends; waiting for the interpreter after it
        # (held by the watcher while it renders) counts towards its time.
        arrival = time.perf_counter() + pace
        time.sleep(pace)
        output = render()
        times.append((time.perf_counter() - arrival) * 1000)
        if output is not last:
            outputs += 1
            last = output
    return times, outputs


def run(label: str, store: Store, changes: Changes, args: argparse.Namespace) -> Run:
    """One run: first render, re-renders of one instance, scrapes with the watcher."""
    renderer = MetricsRenderer(store)
    began = time.perf_counter()
    output = renderer.render()
    first = (time.perf_counter() - began) * 1000
    series = sum(1 for line in output.splitlines() if not line.startswith(b"#"))
    size = len(output)
    del output
    rerenders, rerender_cpu = rerender(renderer, changes, args.changes)
    pace = args.interval / args.every
    renderer.start(args.interval)
    try:
        scrapes, outputs = scrape(renderer.render, changes, args.scrapes, args.every, pace)
    finally:
        renderer.stop()
    body = renderer.render()
    floor, _ = scrape(lambda: body, None, args.scrapes, args.every, pace)
    # Measured with the renderer alive, as the exporter runs it.
    rss = memory_mb("VmRSS")
    return Run(label, os.getloadavg()[0], first, rerenders, rerender_cpu, scrapes, outputs,
               floor, rss, series, size)


@contextmanager
def cpu_hogs(count: int) -> Iterator[None]:
    """count busy Python processes for the duration of the block (ended on every way out)."""
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(count)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()


def verdict(value: float, goal: float | None) -> str:
    """'met' or 'MISSED' against goal (empty without one)."""
    if goal is None:
        return ""
    return f" ({'met' if value < goal else 'MISSED'}: < {goal:g})"


def table(runs: Sequence[Run], args: argparse.Namespace) -> list[str]:
    """The result table (Markdown) and the goals."""
    goals = goals_for(args.instances)
    first = runs[0]
    lines = [
        f"/metrics: {args.instances} instances x {args.history} diagnostics in a real store; "
        f"{first.series:,} series, {first.size / 1e6:.1f} MB per scrape; "
        f"{os.cpu_count()} cores; a store change every {args.every} scrapes, "
        f"watcher every {args.interval:g} s",
        "",
        "| run | load average (1 min) | first render ms | re-render of one instance "
        "p50 / p99 ms | its CPU p50 / p99 ms | scrapes p50 / p99 ms | host floor p50 / p99 "
        "ms | VmRSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r.label} | {r.load_average:.1f} | {r.first_render:.0f} | "
            f"{percentile(r.rerenders, 0.5):.2f} / {percentile(r.rerenders, 0.99):.2f} | "
            f"{percentile(r.rerender_cpu, 0.5):.2f} / {percentile(r.rerender_cpu, 0.99):.2f} | "
            f"{percentile(r.scrapes, 0.5):.2f} / {percentile(r.scrapes, 0.99):.2f} | "
            f"{percentile(r.floor, 0.5):.2f} / {percentile(r.floor, 0.99):.2f} | "
            f"{r.rss:.0f} |")
    lines.append("")
    lines.append(f"goals for up to {goals.instances} instances:")
    for r in runs:
        scrape_goal = goals.scrape_idle_ms if r is first else goals.scrape_loaded_ms
        scrape_p99, rerender_p99 = percentile(r.scrapes, 0.99), percentile(r.rerenders, 0.99)
        lines.append(
            f"  {r.label}: scrapes p99 {scrape_p99:.2f} ms{verdict(scrape_p99, scrape_goal)} "
            f"against a host floor of {percentile(r.floor, 0.99):.2f}; "
            f"re-render p99 {rerender_p99:.2f} ms{verdict(rerender_p99, goals.rerender_ms)}; "
            f"VmRSS {r.rss:.0f} MB{verdict(r.rss, goals.rss_mb)}; {r.outputs} bodies served")
    lines.append(f"peak memory (VmHWM) {memory_mb('VmHWM'):.0f} MB")
    return lines


def positive(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main() -> int:
    """Fill the store, run idle (and loaded with --load) and print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--instances", type=positive, default=100)
    parser.add_argument("--history", type=positive, default=100,
                        help="diagnostics per instance in the store (/metrics reads only "
                             "the latest)")
    parser.add_argument("--scrapes", type=positive, default=400, help="per run")
    parser.add_argument("--every", type=positive, default=20, help="scrapes per store change")
    parser.add_argument("--changes", type=positive, default=100,
                        help="single-instance re-renders timed per run")
    parser.add_argument("--interval", type=float, default=0.5,
                        help="the watcher's interval in seconds")
    parser.add_argument("--load", action="store_true",
                        help="run again with a CPU hog on every core")
    args = parser.parse_args()
    if not args.interval > 0:
        parser.error("--interval must be above 0")
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
        runs: list[Run] = []
        with Store(path, history_limit=args.history) as store:
            changes = Changes(store, _ids(args.instances))
            runs.append(run("without --load", store, changes, args))
            gc.collect()
            if args.load:
                hogs = os.cpu_count() or 1
                print(f"running again with {hogs} CPU hogs ...", file=sys.stderr)
                with cpu_hogs(hogs):
                    runs.append(run(f"with --load ({hogs} CPU hogs)", store, changes, args))
    print()
    print("\n".join(table(runs, args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
