"""Safe restart of an instance (or some of its components) and restart of one service.

Both run the same pipeline (DESIGN §8), each stage a recorded step:

backup → capture_state → silence → stop → verify_volumes → start → quick_health →
compare_state → expire_silence

quick_health is repeated for up to actions.settle_seconds until the critical path is clean:
a component without a healthcheck (rest, kong) counts as up once it runs, and answers a
moment later.

- stop: `docker stop` with a per-container timeout, in reverse dependency order (the
  containers of one dependency level together);
- start: in dependency order, honouring each compose depends_on condition (a dependency
  must be healthy, or only started, before its dependents start), then waiting until every
  container is healthy (running, when it has no healthcheck). A dependency's health is
  learnt by running its own healthcheck command as soon as it runs, instead of waiting for
  Docker's next scheduled check, so a chain of dependencies does not cost one healthcheck
  interval per link; Docker's own verdict is still awaited for every container;
- verify_volumes: every bind-mounted data directory still there with nothing removed at
  its top level, PGDATA still holding PG_VERSION, named volumes still present;
- compare_state: the same containers (ids), images and running/healthy states as before,
  and no fewer auth.users rows or tables per schema.

When a step after the first stop fails, what was running before is started again (what
was stopped before and got started is stopped again), the silence is expired and the
operation fails naming the step and the reason. Nothing is ever removed: the only Docker
calls that change anything are stop and start.
"""


from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actions.containers import Containers, poll_until
from actions.operations.health import settle_quick_health
from actions.operations.model import OperationError, StepFailed
from actions.operations.restart_state import (
    InstanceState,
    capture_paths,
    capture_state,
    compare_states,
    lost_paths,
    notes,
    summary,
)
from actions.operations.runner import Body, OperationContext, describe
from exporter.discovery import Instance
from exporter.discovery.topology import (
    Condition,
    Graph,
    dependents_in,
    topology_of,
)
from exporter.discovery.topology import levels as _levels
from exporter.discovery.topology import order as _topological
from exporter.dockerhost import ContainerDetails

log = logging.getLogger(__name__)

# Bringing back what ran gets at least this long, even when the restart's own health
# timeout was short.
ROLLBACK_MIN_TIMEOUT = 60.0
# A container restarted this often since we started it is crash-looping: stop waiting.
CRASH_LOOP_RESTARTS = 3
_POLL_SECONDS = 0.25

# dependencies -------------------------------------------------------------------------

def dependency_graph(instance: Instance) -> dict[str, dict[str, Condition]]:
    """component -> {dependency: condition}: the instance topology's depends_on links.

    Components without a container or without the label fall back to the compose file,
    then to the reference template's chain; dependencies the instance does not have are
    dropped.
    """
    return topology_of(instance).start_graph()


def dependency_order(instance: Instance) -> list[str]:
    """Every component, each after the components it depends on."""
    return _topological(dependency_graph(instance), list(instance.components))


def dependents(instance: Instance, component: str) -> list[str]:
    """The components that depend on `component`, directly or not, in dependency order."""
    graph = dependency_graph(instance)
    found = dependents_in(graph, component) - {component}
    return [c for c in _topological(graph, list(instance.components)) if c in found]


# stop and start -------------------------------------------------------------------------

def _stop(docker: Containers, levels: Sequence[Sequence[str]], ids: Mapping[str, str],
          timeout: float, on_stopped: Callable[[str, float], None]) -> None:
    """Stop level by level, the last level first; the containers of a level together."""
    for level in reversed(levels):
        todo = [c for c in level if c in ids]
        if not todo:
            continue
        with ThreadPoolExecutor(len(todo), thread_name_prefix="ubd-stop") as pool:
            futures = {c: pool.submit(_timed, docker.stop, ids[c], timeout) for c in todo}
        errors = []
        for component, future in futures.items():
            try:
                on_stopped(component, future.result())
            except OperationError as exc:
                errors.append(f"{component}: {exc}")
        if errors:
            raise StepFailed("stop", "; ".join(errors))


def _timed(call: Callable[..., None], *args: Any) -> float:
    began = time.monotonic()
    call(*args)
    return time.monotonic() - began


@dataclass
class _Started:
    """A container this restart started (or waits for): when, and its restart count then."""

    at: float
    baseline: int


@dataclass(frozen=True)
class _StartReport:
    """How a start went: per component, when it was started and when it was up."""

    started: Mapping[str, float]  # seconds from the beginning until docker start returned
    up: Mapping[str, float]  # seconds from the beginning until it was up
    failed: Mapping[str, str]

    def timeline(self) -> dict[str, dict[str, float | None]]:
        """component -> {started, up} offsets in seconds, for the step's detail."""
        return {c: {"started": round(t, 2),
                    "up": round(self.up[c], 2) if c in self.up else None}
                for c, t in sorted(self.started.items(), key=lambda item: item[1])}


def _start(docker: Containers, plan: Sequence[str], graph: Graph, ids: Mapping[str, str],
           timeout: float, *, strict: bool) -> _StartReport:
    """Start `plan` honouring depends_on conditions; wait until each one is up.

    Containers of the plan that already run are not started again, only waited for.
    The report gives each component's start and up times, and why others did not come up.
    Strict: the first failure raises StepFailed("start"). Otherwise (bringing back what
    ran) a container whose dependency failed or kept it waiting past `timeout` is started
    anyway, and nothing raises.
    """
    return poll_until(_Starter(docker, plan, graph, ids, timeout, strict=strict).tick,
                      interval=_POLL_SECONDS)


class _Starter:
    """One start of a plan, one look at a time: what was started, is up, has failed."""

    def __init__(self, docker: Containers, plan: Sequence[str], graph: Graph,
                 ids: Mapping[str, str], timeout: float, *, strict: bool) -> None:
        self.docker, self.graph, self.ids = docker, graph, ids
        self.timeout, self.strict = timeout, strict
        self.plan = frozenset(plan)
        self.began = time.monotonic()
        self.pending = [c for c in plan if c in ids]
        self.started: dict[str, _Started] = {}
        self.ready: dict[str, float] = {}
        self.failed: dict[str, str] = {}
        self.blocked_since: dict[str, float] = {}
        # Passed their own healthcheck run by us, before Docker's next scheduled run says so.
        self.early: set[str] = set()
        self.gating = {d for c in plan for d, cond in graph.get(c, {}).items()
                       if cond == "service_healthy" and d in self.plan}

    def tick(self) -> _StartReport | None:
        """Look at what was started, start what may start now; the report once all is done."""
        self._watch()
        to_start = self._startable()
        if to_start:
            self._start_together(to_start)
            self.pending = [c for c in self.pending if c not in to_start]
        if self.pending or any(c not in self.ready and c not in self.failed
                               for c in self.started):
            return None
        return _StartReport({c: s.at - self.began for c, s in self.started.items()},
                            self.ready, self.failed)

    def _watch(self) -> None:
        """Judge each started container that is neither up nor failed yet."""
        for component in list(self.started):
            if component in self.ready or component in self.failed:
                continue
            now = self.docker.inspect(self.ids[component])
            since = time.monotonic() - self.started[component].at
            verdict = _readiness(now, self.started[component].baseline, since, self.timeout)
            if verdict == "up":
                self.ready[component] = time.monotonic() - self.began
            elif verdict == "waiting":
                self._probe_early(component, now)
            else:
                line = _telling_line(self.docker.log_tail(self.ids[component], 5))
                self._fail(component, verdict + (f"; last error: {line}" if line else ""))

    def _fail(self, component: str, reason: str) -> None:
        self.failed[component] = reason
        if self.strict:
            raise StepFailed("start", f"{component}: {reason}")

    def _startable(self) -> list[str]:
        """The pending components whose dependencies are met (or will never be)."""
        to_start = []
        now = time.monotonic()
        for component in self.pending:
            verdicts = {d: self._satisfied(d, c)
                        for d, c in self.graph.get(component, {}).items()}
            waited = now - self.blocked_since.setdefault(component, now)
            # A dependency of the plan has its own timeout; one outside it gets this one.
            stuck = [d for d, v in verdicts.items() if v is None or
                     (v is False and d not in self.plan and waited > self.timeout)]
            if stuck and self.strict:
                late = f" after {self.timeout:.0f}s" if waited > self.timeout else ""
                self._fail(component, f"depends on {', '.join(stuck)}, which is not up{late}")
            if stuck or all(verdicts.values()):
                to_start.append(component)
        return to_start

    def _satisfied(self, dep: str, condition: Condition) -> bool | None:
        """True when met, False while it may still be, None when it will not be."""
        if dep in self.failed:
            return None
        if dep in self.plan and dep in self.ids:
            if condition == "service_healthy":
                return dep in self.ready or dep in self.early
            return dep in self.started
        now = self.docker.inspect(self.ids[dep]) if dep in self.ids else None
        if now is None:
            return True  # no container for it at all: nothing to wait for
        return _met(now, condition)

    def _probe_early(self, component: str, now: ContainerDetails | None) -> None:
        """Run a gating container's healthcheck now rather than wait for Docker's interval.

        Docker runs a healthcheck only every `interval` after the start, so a chain of
        healthy-conditions (vector -> db -> analytics) would cost one interval per link.
        When the container's own check passes, its dependents may start; its Docker
        health is still awaited before the start step ends.
        """
        if component in self.early or component not in self.gating or not self.pending \
                or now is None:
            return
        if now.state == "running" and now.health == "starting" and now.healthcheck and \
                self.docker.probe(self.ids[component], now.healthcheck):
            self.early.add(component)

    def _start_together(self, components: Sequence[str]) -> None:
        """docker start the components that are not up (concurrently); track them all."""
        current = {c: self.docker.inspect(self.ids[c]) for c in components}
        needed = [c for c, now in current.items()
                  if now is not None and now.state not in ("running", "restarting")]
        with ThreadPoolExecutor(max(1, len(needed)), thread_name_prefix="ubd-start") as pool:
            futures = {c: pool.submit(self.docker.start, self.ids[c]) for c in needed}
        for component in components:
            future = futures.get(component)
            try:
                if current[component] is None:
                    raise OperationError("the container is gone")
                if future is not None:
                    future.result()
            except OperationError as exc:
                self._fail(component, str(exc))
                continue
            # The restart count right after the start: crash loops are counted from here
            # (docker start may or may not reset it, depending on the engine version).
            now = self.docker.inspect(self.ids[component]) if future is not None \
                else current[component]
            self.started[component] = _Started(time.monotonic(),
                                               now.restart_count if now else 0)


def _met(state: ContainerDetails, condition: Condition) -> bool | None:
    """Whether a dependency meets a depends_on condition: True, False (not yet), None (no)."""
    if condition == "service_healthy":
        if state.ok:
            return True
        return False if state.state == "running" and state.health == "starting" else None
    if condition == "service_completed_successfully":
        if state.state == "exited":
            return True if state.exit_code == 0 else None
        return False if state.running else None
    return True if state.running else None


def _readiness(state: ContainerDetails | None, baseline: int, since: float,
               timeout: float) -> str:
    """"up", "waiting", or why the container will not come up."""
    if state is None:
        return "the container disappeared"
    restarts = state.restart_count - baseline
    if state.ok:
        return "up"
    if restarts >= CRASH_LOOP_RESTARTS:
        return (f"crash-looping: restarted {restarts} times since started "
                f"(last exit code {state.exit_code})")
    if state.state in ("exited", "dead") and (
            state.restart_policy in ("", "no") or
            (state.restart_policy == "on-failure" and state.exit_code == 0)):
        return f"exited with code {state.exit_code}"
    if state.state == "paused":
        return "paused"
    if since > timeout:
        return f"not up after {timeout:.0f}s ({_shown_state(state)})"
    return "waiting"

# the operation ------------------------------------------------------------------------

@dataclass(frozen=True)
class _Plan:
    """What a restart touches."""

    targets: tuple[str, ...]
    graph: Graph
    stop_timeout: float
    health_timeout: float
    settle: float  # how long quick_health may take to come clean after the start


def safe_restart_body(components: Sequence[str] | None,
                      stop_timeout_seconds: float | None = None) -> Body:
    """Safe restart of the instance, or only of the named components (still ordered)."""
    def body(ctx: OperationContext) -> Mapping[str, Any]:
        instance = ctx.instance
        named = list(dict.fromkeys(components or ()))
        unknown = [c for c in named if c not in instance.components]
        if unknown:
            raise OperationError(f"unknown component(s): {', '.join(unknown)}")
        targets = named or list(instance.components)
        return _restart(ctx, targets, stop_timeout_seconds)
    return body


def restart_service_body(component: str, with_dependents: bool) -> Body:
    """Restart one component, and the components that depend on it when asked."""
    def body(ctx: OperationContext) -> Mapping[str, Any]:
        if component not in ctx.instance.components:
            raise OperationError(f"unknown component: {component}")
        targets = [component, *(dependents(ctx.instance, component) if with_dependents
                                else [])]
        return _restart(ctx, targets, None)
    return body


def _restart(ctx: OperationContext, targets: Sequence[str],
             stop_timeout: float | None) -> Mapping[str, Any]:
    """The shared pipeline: backup, capture, silence, stop, verify, start, check, compare."""
    asked = ctx.inputs.get("stop_timeout_seconds") if stop_timeout is None else stop_timeout
    graph = dependency_graph(ctx.instance)
    settings = ctx.config.actions
    plan = _Plan(targets=tuple(_topological(graph, targets)), graph=graph,
                 stop_timeout=float(asked or settings.stop_timeout_seconds),
                 health_timeout=settings.health_timeout_seconds,
                 settle=settings.settle_seconds)
    docker = Containers(ctx.docker, ctx.compose)
    with ctx.step("backup") as detail:
        backup = ctx.backups.create(ctx.instance, reason=f"{ctx.kind} {ctx.op_id}")
        detail["backup_id"] = backup.id
    with ctx.step("capture_state", components=list(plan.targets)) as detail:
        before = capture_state(ctx, docker)
        detail.update(summary(before))
        _preflight(before, plan)
    silence = _silence(ctx, plan)
    try:
        outcome = _act(ctx, docker, plan, before)
    finally:
        _expire_silence(ctx, silence)
    return {"components": list(plan.targets), "backup_id": backup.id,
            "silence_id": silence, **outcome}


def _preflight(before: InstanceState, plan: _Plan) -> None:
    """Refuse before stopping anything when a target could never be started again."""
    if not any(before.containers[c].running for c in plan.targets if c in before.containers):
        raise StepFailed("capture_state", f"none of {', '.join(plan.targets)} is running: "
                                          "nothing to restart")
    for component in plan.targets:
        for dep, condition in plan.graph.get(component, {}).items():
            state = before.containers.get(dep)
            if dep in plan.targets or state is None:
                continue
            if _met(state, condition) is None:
                raise StepFailed("capture_state",
                                 f"{component} depends on {dep} ({condition}), which is "
                                 f"{_shown_state(state)} and not part of this restart; "
                                 "restart it too or fix it first")


def _act(ctx: OperationContext, docker: Containers, plan: _Plan,
         before: InstanceState) -> dict[str, Any]:
    running = [c for c in plan.targets
               if c in before.containers and before.containers[c].running]
    ids = {c: s.id for c, s in before.containers.items()}
    try:
        with ctx.step("stop", order=list(reversed(running)),
                      timeout_seconds=plan.stop_timeout) as detail:
            stopped: dict[str, float] = {}

            def record(component: str, seconds: float) -> None:
                stopped[component] = round(seconds, 2)
                ctx.note(stopped=dict(stopped))

            _stop(docker, _levels(plan.graph, running), ids, plan.stop_timeout, record)
        with ctx.step("verify_volumes") as detail:
            after_stop = capture_paths(before)
            problems = list(lost_paths(before, after_stop).values())
            problems += [f"volume {v} is gone" for v in before.volumes
                         if not docker.volume_exists(v)]
            detail.update(checked=len(before.paths), pgdata=before.pgdata,
                          pg_version=after_stop.pg_version,
                          unverifiable=sorted(p.path for p in before.paths.values()
                                              if p.kind == "unreadable"))
            if problems:
                raise StepFailed("verify_volumes", "; ".join(problems))
        with ctx.step("start", order=running,
                      timeout_seconds=plan.health_timeout) as detail:
            report = _start(docker, running, plan.graph, ids, plan.health_timeout, strict=True)
            detail["timeline"] = report.timeline()
        with ctx.step("quick_health", settle_seconds=plan.settle) as detail:
            health, _, runs = settle_quick_health(ctx, time.monotonic() + plan.settle)
            detail.update(healthy=health.healthy, runs=runs,
                          issues=[f"{i.code}[{i.component}]" for i in health.issues])
            if not health.healthy:
                raise StepFailed("quick_health", "; ".join(
                    f"{i.code} on {i.component}: {i.message}" for i in health.issues[:5]))
        with ctx.step("compare_state") as detail:
            after = capture_state(ctx, docker)
            problems = compare_states(before, after)
            changes = notes(before, after)
            detail.update(db=after.db.to_dict(), notes=changes)
            if problems:
                raise StepFailed("compare_state", "; ".join(problems))
        return {"state_before": summary(before), "state_after": summary(after),
                "stopped_seconds": stopped,
                "start_timeline": report.timeline(),
                "notes": changes}
    except OperationError as exc:
        cause = exc.reason if isinstance(exc, StepFailed) else str(exc)
        where = exc.step if isinstance(exc, StepFailed) else "restart"
        try:
            unlike = _bring_back(ctx, docker, plan, before)
        except OperationError as undo:
            unlike = [f"the rollback itself failed: {undo}"]
        if not unlike:
            raise OperationError(f"{where} failed: {cause}; brought back what was running "
                                 f"({', '.join(running) or 'nothing'})",
                                 rolled_back=True) from None
        raise OperationError(f"{where} failed: {cause}; brought back what was running "
                             f"except: {'; '.join(unlike)}") from None


def _bring_back(ctx: OperationContext, docker: Containers, plan: _Plan,
                before: InstanceState) -> list[str]:
    """Start what ran before, stop what we started that did not; what is still not as before.

    Containers whose data failed the integrity check are left stopped (with what depends
    on them): starting a database on a damaged data directory could initialise a new,
    empty one over it.
    """
    with ctx.undo_step("rollback") as detail:
        ids = {c: s.id for c, s in before.containers.items()}
        now = {c: found for c in plan.targets if c in ids
               and (found := docker.inspect(ids[c])) is not None}
        keep_down = _damaged(before, plan)
        for component in list(keep_down):
            keep_down.update(dependents_in(plan.graph, component))
        # What ran and is not up again: stopped ones are started, the others waited for.
        to_start = [c for c in plan.targets if c in now and before.containers[c].running
                    and not now[c].ok and c not in keep_down]
        to_stop = [c for c in plan.targets if c in now and not before.containers[c].running
                   and now[c].running]
        detail.update(start=to_start, stop=to_stop, left_stopped=sorted(keep_down))
        report = _start(docker, to_start, plan.graph, ids,
                        max(plan.health_timeout, ROLLBACK_MIN_TIMEOUT), strict=False)
        failed = dict(report.failed)
        for component in to_stop:
            try:
                docker.stop(ids[component], plan.stop_timeout)
            except OperationError as exc:
                failed[component] = str(exc)
        final = {c: found for c in plan.targets if c in ids
                 and (found := docker.inspect(ids[c])) is not None}
        unlike = sorted(c for c, was in before.containers.items() if c in plan.targets and (
            c not in final or was.running != final[c].running or (was.ok and not final[c].ok)))
        detail.update(back_up=report.timeline(), not_back=failed, differs_from_before=unlike)
    if unlike:
        ctx.mark("rollback", "failed")
    return [f"{c} ({_first_line(failed[c]) if c in failed else _shown_state(final.get(c))})"
            for c in unlike]


def _shown_state(state: ContainerDetails | None) -> str:
    if state is None:
        return "gone"
    return state.state + (f", {state.health}" if state.health else "")


def _first_line(text: str) -> str:
    return text.split("; last error: ", 1)[0]


def _telling_line(lines: Sequence[str]) -> str | None:
    """The last log line that reports an error (else the last line), shortened."""
    chosen = next((line for line in reversed(lines) if any(
        word in line.lower() for word in ("fatal", "error", "panic", "failed"))),
        lines[-1] if lines else None)
    if chosen is None or len(chosen) <= 400:
        return chosen
    # Long JSON log lines carry the cause at the end (the wrapped error's own message).
    return f"{chosen[:150]} ... {chosen[-240:]}"


def _damaged(before: InstanceState, plan: _Plan) -> set[str]:
    """Targets that mount a data path which is now gone or lost entries."""
    bad = list(lost_paths(before, capture_paths(before)))
    out = set()
    for component in plan.targets:
        state = before.containers.get(component)
        for mount in state.mounts if state else ():
            source = Path(mount.source)
            if any(Path(b) == source or Path(b) in source.parents or source in Path(b).parents
                   for b in bad):
                out.add(component)
    return out


def _silence(ctx: OperationContext, plan: _Plan) -> str | None:
    """Silence the instance's alerts for as long as the restart could take."""
    if ctx.alertmanager is None:
        ctx.skip("silence", reason="no Alertmanager configured")
        return None
    levels = len(_levels(plan.graph, plan.targets))
    duration = min(6 * 3600.0, plan.stop_timeout * len(plan.targets)
                   + max(plan.health_timeout, ROLLBACK_MIN_TIMEOUT) * (levels + 1)
                   + plan.settle + 300)
    try:
        with ctx.step("silence", duration_seconds=round(duration)) as detail:
            silence_id = ctx.alertmanager.create_silence(
                ctx.instance.id, comment=f"ultrabase-doctor {ctx.kind} (operation {ctx.op_id})",
                duration_seconds=duration)
            detail["silence_id"] = silence_id
            return silence_id
    except OperationError:
        raise
    except Exception as exc:
        # Alerts during a restart are noise, not danger: carry on without the silence.
        log.warning("operation %s: no silence: %s", ctx.op_id, describe(exc))
        ctx.mark("silence", "skipped")
        return None


def _expire_silence(ctx: OperationContext, silence_id: str | None) -> None:
    if silence_id is None or ctx.alertmanager is None:
        return
    try:
        with ctx.step("expire_silence", silence_id=silence_id):
            ctx.alertmanager.expire_silence(silence_id)
    except Exception as exc:
        # The silence ends by itself at its end time; the restart's outcome stands.
        log.warning("operation %s: cannot expire silence %s: %s", ctx.op_id, silence_id,
                    describe(exc))


