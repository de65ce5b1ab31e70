"""The fault campaign: every fault of the fleet's catalogue, diagnosed, healed and judged.

Brings up a fleet (3 instances; --instances) or uses one (--root DIR, kept at the end), and
diagnoses it with the real engine (exporter.engine.DiagnosticsEngine, the fleet's doctor
config, one engine for the whole campaign as the exporter keeps one). Then, one at a time:

- every fault of fleet.faults.specs() (--faults to choose), on one instance (the instances
  take turns), the others left healthy;
- pairs of independent faults on two instances at once (--pairs), a third left healthy.

For each fault it compares the diagnosis with the fault's expectation (FaultSpec.expect:
root-cause code(s) and component, the repair the root cause must offer, or none) and
prints: expected and given root cause and repair, how long the instance's diagnosis took,
whether the instance read healthy (exit code 0: healthy, no warning or critical issue) on
the first run after the heal whose live checks all pass, and whether a healthy neighbour
was flagged (a warning or critical issue in the same sweep). It ends with the confusion
of expected against given root causes and the counts, and the host's load: the machine is
shared, and a loaded host slows every probe.

Writes nothing into the tree. Run: python -m bench.accuracy [--instances 3 | --root DIR]
[--faults F,G | --skip-singles] [--pairs A+B,C+D | --pairs none] [--heal-within 90]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actions.operations.repair import build_plan
from bench.hostcpu import host_busy
from exporter.config import Config, load_config
from exporter.diagnostic import Diagnostic
from exporter.dockerhost import DockerHost
from exporter.engine import DiagnosticsEngine
from exporter.errors import DoctorError
from exporter.service import terminate_on_sigterm
from fleet import faults as fleet_faults
from fleet.fleet import Fleet
from fleet.model import Expectation, FleetError

# The default: 3 s left the in-network probe 1 s per target, too little on a saturated
# shared host (a healthy rest timed out).
TIMEOUT = 5.0
# Independent faults on two instances at once: different components and layers.
PAIRS: tuple[tuple[str, str], ...] = (
    ("stop:auth", "kong-key-mismatch"),
    ("pause:kong", "auth-db-password"),
    ("stop:db", "jwt-secret-short"),
    ("port-taken", "service-key-expired"),
    ("volume-missing", "recreate:rest"),
)
UP_TIMEOUT = 900.0
NONE = "-"


# ---- the engine, as the live tests use it ------------------------------------------------


def make_engine(fleet: Fleet, **diagnostics: Any) -> DiagnosticsEngine:
    """The real engine over the fleet's doctor config, with diagnostics settings changed."""
    config = load_config(fleet.config_path)
    settings = {"timeout_seconds": TIMEOUT, **diagnostics}
    thresholds = settings.pop("thresholds", None)
    diag = config.diagnostics.model_copy(update=settings)
    if thresholds:
        diag = diag.model_copy(update={"thresholds": diag.thresholds.model_copy(
            update=thresholds)})
    tuned: Config = config.model_copy(update={"diagnostics": diag})
    return DiagnosticsEngine(tuned, DockerHost(config.docker.base_url, TIMEOUT))


def sweep(engine: DiagnosticsEngine) -> dict[str, Diagnostic]:
    """Diagnose every instance now; by instance id."""
    return {d.instance_id: d for d in engine.sweep("on_demand")}


SERIOUS = ("critical", "warning")


def serious(diagnostic: Diagnostic) -> list[str]:
    """The warning and critical issues, as CODE[component]: message."""
    return [f"{i.code}[{i.component}]: {i.message}" for i in diagnostic.issues
            if i.severity in SERIOUS]


def live_failing(diagnostic: Diagnostic) -> list[str]:
    """The live checks (all but the logs) that neither passed nor were skipped."""
    return [name for name, r in diagnostic.results.items()
            if name != "logs" and r.status not in ("ok", "skipped")]


def first_run_with_live_checks_passing(engine: DiagnosticsEngine, instance_id: str,
                                       within: float = 60.0) -> Diagnostic:
    """Diagnose until every live check passes; that run, or the last one after `within`."""
    deadline = time.monotonic() + within
    while True:
        diagnostic = engine.run(instance_id, trigger="operation", use_cache=False,
                                limited=False).diagnostic
        if not live_failing(diagnostic) or time.monotonic() >= deadline:
            return diagnostic
        time.sleep(1.0)


# ---- judging, from plain data ------------------------------------------------------------


@dataclass(frozen=True)
class Given:
    """What the doctor concluded about one instance."""

    code: str | None
    component: str | None
    repair: str | None

    def root(self) -> str:
        """CODE[component], or "-" without a root cause."""
        if self.code is None:
            return NONE
        return self.code + (f"[{self.component}]" if self.component else "")

    @classmethod
    def of(cls, diagnostic: Diagnostic) -> Given:
        """The diagnostic's root cause and the repair it offers."""
        root = diagnostic.root_cause
        if root is None:
            return cls(None, None, None)
        return cls(root.issue.code, root.issue.component, root.issue.repair)


@dataclass(frozen=True)
class Flag:
    """A warning or critical issue on an instance that should have read healthy."""

    instance: str  # A, B, C
    code: str
    component: str | None
    message: str

    def __str__(self) -> str:
        return f"{self.instance} {self.code}[{self.component}]: {self.message}"


# What a loaded host alone raises on a healthy instance: an answer over the threshold.
LOAD_CODES = frozenset({"ENDPOINT_SLOW"})


def root_right(expect: Expectation, given: Given) -> bool:
    """The root cause has one of the expected codes, on the expected component."""
    return given.code in expect.codes and given.component == expect.component


def repair_right(expect: Expectation, given: Given) -> bool:
    """The root cause offers the expected repair (or none, when none helps)."""
    return given.code is not None and given.repair == expect.repair


@dataclass(frozen=True)
class Outcome:
    """One fault on one instance: expected, given, timing, and what followed the heal."""

    fault: str
    instance: str  # A, B, C: the instance's place in the fleet
    run: str  # "single", or the pair's name
    expect: Expectation | None
    given: Given
    seconds: float  # the instance's diagnosis in the sweep with the fault in
    stale: tuple[str, ...]  # warning/critical issues after the heal (empty: healthy)
    healed_healthy: bool  # that run read healthy (exit code 0)
    neighbours: tuple[Flag, ...]  # issues on healthy neighbours in the same sweep
    plan: tuple[str, ...] = ()  # the repair plan's actions for the instance
    error: str = ""

    @property
    def root_ok(self) -> bool:
        """The expected root cause was given."""
        return self.expect is not None and not self.error and root_right(self.expect,
                                                                         self.given)

    @property
    def repair_ok(self) -> bool:
        """The expected repair was offered by the root cause."""
        return self.expect is not None and not self.error and repair_right(self.expect,
                                                                           self.given)

    @property
    def fresh(self) -> bool:
        """Healthy, with nothing left over, on the first run after the heal."""
        return not self.error and self.healed_healthy and not self.stale

    @property
    def neighbours_slow_only(self) -> bool:
        """Neighbours were flagged, only for answers over the time threshold (load)."""
        return bool(self.neighbours) and all(f.code in LOAD_CODES for f in self.neighbours)


def _mark(ok: bool) -> str:
    return "ok" if ok else "**WRONG**"


def table(outcomes: Sequence[Outcome]) -> list[str]:
    """One Markdown row per outcome."""
    lines = ["| fault | on | expected root cause | given | expected repair | given repair "
             "| diagnosis s | after heal | neighbours |",
             "|---|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        expected = o.expect.root() if o.expect else "(none stated)"
        want = (o.expect.repair or "none") if o.expect else NONE
        if o.error:
            lines.append(f"| {o.fault} | {o.instance} | {expected} | error: {o.error} "
                         f"| {want} | | | | |")
            continue
        after = "healthy" if o.fresh else "STALE: " + "; ".join(o.stale or ("unhealthy",))
        flagged = "clean" if not o.neighbours else "FLAGGED: " + "; ".join(
            str(f) for f in o.neighbours)
        lines.append(
            f"| {o.fault} | {o.instance} | {expected} | {o.given.root()} {_mark(o.root_ok)} "
            f"| {want} | {o.given.repair or 'none'} {_mark(o.repair_ok)} "
            f"| {o.seconds:.1f} | {after} | {flagged} |")
    return lines


def confusion(outcomes: Iterable[Outcome]) -> Counter[tuple[str, str]]:
    """(expected root cause, given root cause) -> how often."""
    return Counter((o.expect.root() if o.expect else NONE,
                    "error" if o.error else o.given.root()) for o in outcomes)


def confusion_table(outcomes: Sequence[Outcome]) -> list[str]:
    """The confusion as Markdown rows: expected, given, count, right or wrong."""
    lines = ["| expected root cause | given | count | |", "|---|---|---|---|"]
    judged = {(o.expect.root() if o.expect else NONE,
               "error" if o.error else o.given.root()): o.root_ok for o in outcomes}
    for (expected, given), count in sorted(confusion(outcomes).items()):
        lines.append(f"| {expected} | {given} | {count} | "
                     f"{'right' if judged[expected, given] else 'wrong'} |")
    return lines


@dataclass(frozen=True)
class Summary:
    """The campaign's counts."""

    faults: int
    root_right: int
    repair_right: int
    stale: int
    neighbour_flagged: int
    neighbour_slow_only: int  # of those, only ENDPOINT_SLOW (the host's load)
    errors: int

    @classmethod
    def of(cls, outcomes: Sequence[Outcome]) -> Summary:
        """Count the outcomes; a run that failed counts as wrong everywhere it has to."""
        judged = [o for o in outcomes if not o.error]
        return cls(len(outcomes), sum(o.root_ok for o in outcomes),
                   sum(o.repair_ok for o in outcomes),
                   sum(not o.fresh for o in judged),
                   sum(bool(o.neighbours) for o in judged),
                   sum(o.neighbours_slow_only for o in judged),
                   len(outcomes) - len(judged))

    def line(self) -> str:
        """One sentence."""
        return (f"{self.faults} faults: root cause right {self.root_right}/{self.faults}, "
                f"repair right {self.repair_right}/{self.faults}, stale after heal "
                f"{self.stale}, healthy neighbour flagged {self.neighbour_flagged}"
                + (f" ({self.neighbour_slow_only} of them only ENDPOINT_SLOW)"
                   if self.neighbour_slow_only else "")
                + (f", runs that failed {self.errors}" if self.errors else ""))


# ---- the campaign ------------------------------------------------------------------------


@dataclass(frozen=True)
class Campaign:
    """A fleet, its engine and how long a heal may take to show."""

    fleet: Fleet
    engine: DiagnosticsEngine
    heal_within: float

    def label(self, instance_id: str) -> str:
        """A, B, C, ... by the instance's place in the fleet."""
        return chr(ord("A") + self.fleet.ids.index(instance_id))

    def run(self, broken: Sequence[tuple[str, str]], name: str) -> list[Outcome]:
        """Break each (instance, fault), diagnose the fleet, heal, judge; one outcome each."""
        done: list[tuple[str, str]] = []
        try:
            for iid, fault in broken:
                done.append((iid, fault))
                self.fleet.break_(iid, fault)
            results = sweep(self.engine)
        except (FleetError, DoctorError, OSError) as exc:
            self._heal(done)
            return [self._failed(iid, fault, name, f"break: {exc}") for iid, fault in broken]
        targets = {iid for iid, _ in broken}
        neighbours = tuple(Flag(self.label(iid), i.code, i.component, i.message)
                           for iid, d in sorted(results.items()) if iid not in targets
                           for i in d.issues if i.severity in SERIOUS)
        plans = {iid: self._plan(results[iid], iid) for iid in targets}
        failed = self._heal(done)
        outcomes = []
        for iid, fault in broken:
            if failed.get(iid):
                outcomes.append(self._failed(iid, fault, name, f"heal: {failed[iid]}"))
                continue
            healed = first_run_with_live_checks_passing(self.engine, iid, self.heal_within)
            stale = tuple(serious(healed))
            if live_failing(healed):
                stale += (f"live checks {live_failing(healed)} still fail",)
            diagnostic = results[iid]
            outcomes.append(Outcome(
                fault, self.label(iid), name, fleet_faults.get(fault).spec.expect,
                Given.of(diagnostic), diagnostic.duration_seconds, stale,
                healed.healthy, neighbours, plans[iid]))
        return outcomes

    def _plan(self, diagnostic: Diagnostic, iid: str) -> tuple[str, ...]:
        plan = build_plan(diagnostic, self.engine.instance(iid, fresh=True))
        return tuple(a.id for a in plan.actions)

    def _heal(self, done: Sequence[tuple[str, str]]) -> dict[str, str]:
        """Heal every fault broken; what failed, by instance."""
        failed: dict[str, str] = {}
        for iid, fault in done:
            try:
                self.fleet.heal(iid, fault)
            except (FleetError, OSError) as exc:
                failed[iid] = str(exc).splitlines()[0]
        return failed

    def _failed(self, iid: str, fault: str, name: str, error: str) -> Outcome:
        return Outcome(fault, self.label(iid), name, fleet_faults.get(fault).spec.expect,
                       Given(None, None, None), 0.0, (), False, (), error=error)


def _progress(outcomes: Sequence[Outcome]) -> None:
    for row in table(outcomes)[2:]:
        print(row, file=sys.stderr, flush=True)


def campaign(fleet: Fleet, args: argparse.Namespace, outcomes: list[Outcome]) -> None:
    """Every chosen fault alone, the instances taking turns, then the pairs; each outcome
    is added to `outcomes` as it is judged (an interrupted run keeps what it has)."""
    engine = make_engine(fleet)
    ids = fleet.ids
    try:
        bench = Campaign(fleet, engine, args.heal_within)
        sweep(engine)  # the first sweep reads what every instance looks like healthy
        for n, fault in enumerate(args.faults):
            iid = ids[n % len(ids)]
            print(f"{fault} on {bench.label(iid)} (load average {os.getloadavg()[0]:.1f}) ...",
                  file=sys.stderr, flush=True)
            outcomes += bench.run([(iid, fault)], "single")
            _progress(outcomes[-1:])
        for first, second in args.pairs:
            name = f"{first} + {second}"
            print(f"{name} on A and B (load average {os.getloadavg()[0]:.1f}) ...",
                  file=sys.stderr, flush=True)
            outcomes += bench.run([(ids[0], first), (ids[1], second)], name)
            _progress(outcomes[-2:])
    finally:
        engine.close()


def report(outcomes: Sequence[Outcome], host: str) -> None:
    """The tables and the summary on stdout."""
    singles = [o for o in outcomes if o.run == "single"]
    pairs = [o for o in outcomes if o.run != "single"]
    if singles:
        print(f"\nOne fault at a time ({len(singles)}):")
        print("\n".join(table(singles)))
    if pairs:
        print(f"\nTwo faults at once, on A and B ({len(pairs) // 2} pairs):")
        print("\n".join(table(pairs)))
    print("\nRoot causes, expected against given:")
    print("\n".join(confusion_table(outcomes)))
    print(f"\n{Summary.of(outcomes).line()}")
    print(host)


def _pair(text: str) -> tuple[str, str]:
    first, sep, second = text.partition("+")
    if not sep or not first or not second:
        raise argparse.ArgumentTypeError(f"a pair is FAULT+FAULT, not {text!r}")
    return first, second


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, checked against the fault catalogue."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--instances", type=int, default=3,
                        help="fleet size (at least 3 for the pairs' healthy neighbour)")
    parser.add_argument("--root", help="use the existing fleet at this root (python -m "
                        "fleet up) instead of a new one; it is kept")
    names = [s.name for s in fleet_faults.specs()]
    parser.add_argument("--faults", default=",".join(names),
                        help="faults to inject one at a time (default: every one)")
    parser.add_argument("--skip-singles", action="store_true",
                        help="only the pairs")
    parser.add_argument("--pairs", default=",".join(f"{a}+{b}" for a, b in PAIRS),
                        help="FAULT+FAULT pairs on two instances at once, or 'none'")
    parser.add_argument("--heal-within", type=float, default=90.0,
                        help="seconds the live checks may take to pass after a heal")
    parser.add_argument("--health-interval", default="10s",
                        help="the fleet's healthcheck interval (the template's is 5-10 s)")
    args = parser.parse_args(argv)
    args.faults = [] if args.skip_singles else [f for f in args.faults.split(",") if f]
    try:
        args.pairs = [] if args.pairs == "none" else [
            _pair(p) for p in args.pairs.split(",") if p]
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    unknown = sorted({f for f in [*args.faults, *(f for p in args.pairs for f in p)]
                      if f not in names})
    if unknown:
        parser.error(f"unknown faults {', '.join(unknown)}; see python -m fleet faults")
    if args.pairs and args.instances < 3 and not args.root:
        parser.error("the pairs need 3 instances: two broken, one healthy neighbour")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Bring up (or open) the fleet, run the campaign, print the tables."""
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ubd-accuracy-"))
    fleet: Fleet | None = None
    outcomes: list[Outcome] = []
    started, busy, load = time.monotonic(), host_busy(), os.getloadavg()[0]
    # SIGTERM ends the run like Ctrl-C: the fleet it brought up is removed.
    with terminate_on_sigterm():
        try:
            if args.root:
                fleet = Fleet.open(Path(args.root))
            else:
                print(f"bringing up {args.instances} instances ...", file=sys.stderr)
                fleet = Fleet.up(work / "fleet", args.instances, timeout=UP_TIMEOUT,
                                 health_interval=args.health_interval)
            if args.pairs and len(fleet.ids) < 3:
                raise FleetError("the pairs need 3 instances: two broken, one neighbour")
            campaign(fleet, args, outcomes)
        finally:
            if fleet is not None and not args.root:
                fleet.down()
            shutil.rmtree(work, ignore_errors=True)
            span = time.monotonic() - started
            host = (f"{span / 60:.0f} minutes; host busy {(host_busy() - busy) / span:.2f} of "
                    f"{os.cpu_count()} cores on average, load average {load:.1f} at the start,"
                    f" {os.getloadavg()[0]:.1f} at the end")
            if outcomes:
                report(outcomes, host)
    return 0


if __name__ == "__main__":
    sys.exit(main())
