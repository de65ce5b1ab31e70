"""What watching costs, priced kind by kind: each kind of work run in bursts, net of idle.

Watching a healthy fleet keeps the host a little busier than its idle background, by less
than the background drifts over ten minutes on a small shared host; a window's host-wide
figure cannot tell that apart. Watching does few kinds of work, though, and counts them: full
diagnostics (scheduled, or triggered by an event or the probe), quick-probe rounds, and the
hourly synthetic user test. Each kind is run here back to back (a burst, many times the
window's rate, so far above the background's noise), between idle windows, and priced in host
CPU-seconds net of the mean of the idle rates before and after it: what the doctor spends and
what it causes in the containers, dockerd, containerd and runc alike. The burst's own share
(this process's CPU) is priced apart, so that a window's exact exporter CPU can stand in for
it: the window's cost is the exporter's own CPU plus, for each kind, its count times what one
of it causes elsewhere.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.hostcpu import background_rate, host_busy, own_cpu
from exporter.config import Config
from exporter.dockerhost import DockerHost
from exporter.engine import DiagnosticsEngine
from exporter.watch.probe import QuickProbe
from exporter.watch.status import WatchStatus


@dataclass(frozen=True)
class Burst:
    """One burst: how long, what the host and this process spent, engine calls, units."""

    seconds: float
    host: float  # host CPU-seconds busy, net of the idle rate around the burst
    tool: float  # this process's CPU-seconds (all its threads)
    calls: int
    units: int


@dataclass(frozen=True)
class Price:
    """The median of a kind's bursts, per unit of work."""

    kind: str
    host: float  # host CPU-seconds per unit, net of idle
    tool: float  # of which this process's
    spread: float  # half the range of the bursts' host figure per unit
    calls: float  # engine API calls per unit
    seconds: float  # wall seconds per unit

    @property
    def caused(self) -> float:
        """CPU-seconds one unit costs outside the doctor's process: containers, engine."""
        return max(0.0, self.host - self.tool)

    @classmethod
    def of(cls, kind: str, bursts: Sequence[Burst]) -> Price:
        """The median per unit over bursts."""
        per = [b.host / b.units for b in bursts]
        return cls(kind, statistics.median(per),
                   statistics.median(b.tool / b.units for b in bursts),
                   (max(per) - min(per)) / 2,
                   statistics.median(b.calls / b.units for b in bursts),
                   statistics.median(b.seconds / b.units for b in bursts))


def bursts(work: Callable[[], int], calls: Callable[[], int], repeat: int,
           idle_seconds: float, *, rate: Callable[[float], float] = background_rate,
           busy: Callable[[], float] = host_busy,
           clock: Callable[[], float] = time.monotonic) -> list[Burst]:
    """Run work() repeat times, each between idle windows; work returns the units it did.

    rate(seconds) measures an idle window's cores, busy() the host's CPU-seconds so far.
    """
    out: list[Burst] = []
    idle_before = rate(idle_seconds)
    for _ in range(repeat):
        started, host, own, called = clock(), busy(), own_cpu(), calls()
        units = work()
        seconds = clock() - started
        spent, tool, made = busy() - host, own_cpu() - own, calls() - called
        idle_after = rate(idle_seconds)
        # The background during the burst: the mean of the idle windows on either side.
        idle = (idle_before + idle_after) / 2
        out.append(Burst(seconds, spent - idle * seconds, tool, made, max(1, units)))
        idle_before = idle_after
    return out


@dataclass(frozen=True)
class Prices:
    """The three kinds of work watching does."""

    diagnostic: Price  # a full diagnostic as a sweep runs it (no synthetic user test)
    round: Price  # one quick-probe round over the whole fleet
    synthetic: Price  # a full diagnostic with the synthetic user test

    @property
    def synthetic_extra(self) -> float:
        """Host CPU-seconds the synthetic user test adds to a diagnostic."""
        return max(0.0, self.synthetic.host - self.diagnostic.host)


def price_watching(config: Config, ids: Sequence[str], repeat: int = 3,
                   idle_seconds: float = 20.0, probe_rounds: int = 10,
                   sweeps: int = 2) -> Prices:
    """Price each kind in bursts on the fleet config describes (the exporter stopped).

    The engine and the probe are the exporter's own classes with config's settings, so a
    diagnostic here does what a scheduled one there does. A first sweep warms them up
    (imports, connections) and, in a store the exporter has not filled, runs the synthetic
    user tests the later scheduled ones then skip, as the exporter's do within the hour.
    """
    docker = DockerHost(config.docker.base_url, config.docker.timeout_seconds)
    engine = DiagnosticsEngine(config, docker)
    probe = QuickProbe(engine, WatchStatus(None))
    instances = list(ids)

    def sweep(trigger: str) -> Callable[[], int]:
        def run() -> int:
            for _ in range(sweeps):
                engine.sweep(trigger, instances)
            return sweeps * len(instances)
        return run

    def rounds() -> int:
        for _ in range(probe_rounds):
            probe.run_once()
        return probe_rounds

    def calls() -> int:
        return docker.api_calls

    try:
        engine.sweep("scheduled", instances)
        probe.run_once()
        return Prices(
            Price.of("diagnostic", bursts(sweep("scheduled"), calls, repeat, idle_seconds)),
            Price.of("probe round", bursts(rounds, calls, repeat, idle_seconds)),
            Price.of("diagnostic with synthetic user test",
                     bursts(sweep("on_demand"), calls, repeat, idle_seconds)))
    finally:
        probe.close()
        engine.close()


@dataclass(frozen=True)
class Window:
    """What the exporter did while it was watched: its own CPU and its counts of work."""

    instances: int
    minutes: float
    exporter_cpu: float  # CPU-seconds of the exporter process in the window
    paced: float  # diagnostics whose synthetic user test is hourly (scheduled, event)
    full: float  # diagnostics that always include it (watch, on demand, operations)
    rounds: float  # quick-probe rounds in the window
    synthetic: float  # synthetic user tests of the paced runs, at the steady hourly rate

    @property
    def scale(self) -> float:
        """Instance-minutes in the window."""
        return self.instances * self.minutes


# A row of the priced table: part, count per instance-minute (None: not counted), CPU-s
# each, CPU-s per instance-minute.
Row = tuple[str, float | None, float, float]


def window_rows(window: Window, prices: Prices) -> list[Row]:
    """The exporter's own CPU, then for each kind of work what it causes outside it."""
    scale = window.scale
    caused = "caused in containers and engine"
    work: list[tuple[str, float, float]] = [
        (f"diagnostics, paced (scheduled, event): {caused}", window.paced,
         prices.diagnostic.caused),
        (f"diagnostics, full (watch, on demand): {caused}", window.full,
         prices.synthetic.caused),
        (f"quick-probe rounds (whole fleet each): {caused}", window.rounds,
         prices.round.caused),
        ("synthetic user tests of the paced runs, hourly: all of it", window.synthetic,
         prices.synthetic_extra),
    ]
    own: Row = ("exporter's own CPU, measured in the window", None, window.exporter_cpu,
                window.exporter_cpu / scale)
    return [own, *((name, count / scale, each, count * each / scale)
                   for name, count, each in work)]


def at_rest(window: Window, prices: Prices) -> float:
    """The exporter's CPU-seconds in the window beyond what its priced work took the bench."""
    return (window.exporter_cpu - window.paced * prices.diagnostic.tool
            - window.full * prices.synthetic.tool - window.rounds * prices.round.tool)


def priced_total(window: Window, prices: Prices) -> float:
    """CPU-seconds per instance-minute: the exporter's own plus what its work causes."""
    return sum(row[3] for row in window_rows(window, prices))


def print_prices(prices: Prices, window: Window, goal: float) -> None:
    """The price list, then watching's cost per instance-minute built from it."""
    print(f"\nPrices, each kind run in bursts between idle windows (host CPU-seconds net of "
          f"idle; median of the bursts, ± half their range; {window.instances} instances):")
    print("| kind | host CPU-s per unit | of which the doctor's | engine calls per unit "
          "| wall s per unit |")
    print("|---|---|---|---|---|")
    for p in (prices.diagnostic, prices.round, prices.synthetic):
        print(f"| {p.kind} | {p.host:.3f} ± {p.spread:.3f} | {p.tool:.3f} | {p.calls:.1f} "
              f"| {p.seconds:.2f} |")
    print(f"\nWatching {window.instances} instances for {window.minutes:.1f} minutes, priced: "
          "the exporter's own CPU plus each kind's count times what one causes outside it "
          "(the synthetic user test in full: the exporter did none in the window):")
    print("| part | count per instance-minute | CPU-s each | CPU-s per instance-minute |")
    print("|---|---|---|---|")
    for part, count, each, total in window_rows(window, prices):
        shown = "" if count is None else f"{count:.3f}"
        print(f"| {part} | {shown} | {each:.3f} | {total:.4f} |")
    print(f"| **total** | | | **{priced_total(window, prices):.3f}** (goal {goal:g}) |")
    rest = at_rest(window, prices)
    print(f"the exporter's own CPU beyond what the same work took in bursts here (its event "
          f"stream, scheduler, store and logs): {rest:.2f} CPU-s in the window, "
          f"{rest / window.scale:.4f} per instance-minute")
