"""Scheduled diagnostics: the global sweep, per-instance schedules and the quick probe."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from apscheduler.events import EVENT_JOB_ERROR, JobExecutionEvent
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from exporter.discovery import Discovery
from exporter.engine import DiagnosticsEngine
from exporter.errors import DoctorError
from exporter.store import InstanceInfo

log = logging.getLogger(__name__)

# The customer's plan offers these intervals; anything else must be a cron expression.
INTERVALS: dict[str, str] = {"1h": "0 * * * *", "6h": "0 */6 * * *", "12h": "0 */12 * * *",
                             "24h": "0 0 * * *"}
_CRON_CHARS = re.compile(r"^[0-9*/,\- A-Za-z]{9,100}$")
_SWEEP_JOB = "sweep"
_PROBE_JOB = "probe"
_MISFIRE_GRACE_SECONDS = 60


class ScheduleError(DoctorError):
    """A schedule spec that is neither a known interval nor a valid cron expression."""


class SweepStore(Protocol):
    """What a sweep records besides the diagnostics themselves."""

    def set_meta(self, key: str, value: str) -> None:
        """Keep one value."""
        ...

    def set_instances(self, infos: Sequence[InstanceInfo], *,
                      departed_before: datetime | None = None) -> None:
        """Replace the list of known instances (and forget the verdicts of departed ones)."""
        ...

    def record_run(self, trigger: str, result: str) -> None:
        """Count a run."""
        ...


def instance_infos(found: Discovery) -> list[InstanceInfo]:
    """What the store keeps of each instance a discovery found."""
    return [InstanceInfo(i.id, i.name, i.owner) for i in found.instances.values()]


def cron_of(spec: str) -> str:
    """The cron expression of a spec ("6h" or a 5-field cron line); ScheduleError if invalid."""
    spec = spec.strip()
    cron = INTERVALS.get(spec, spec)
    if not _CRON_CHARS.match(cron) or len(cron.split()) != 5:
        raise ScheduleError(f"schedule must be one of {', '.join(INTERVALS)} or a 5-field "
                            "cron expression")
    try:
        CronTrigger.from_crontab(cron, timezone=UTC)
    except ValueError as exc:
        raise ScheduleError(f"invalid cron expression: {exc}") from None
    return cron


def shortest_gap_seconds(cron: str) -> float:
    """The least time between two runs of a 5-field cron expression, over any days it runs.

    Only the minute and hour fields decide it: on a day the expression runs, it runs at
    every minute and hour they list, and two such days may follow each other. So two days
    of the expression with its day fields as `*` show every gap it can ever have.
    """
    minute, hour = cron.split()[:2]
    trigger = CronTrigger.from_crontab(f"{minute} {hour} * * *", timezone=UTC)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    end = start + timedelta(days=2)
    shortest = float("inf")
    previous = trigger.get_next_fire_time(None, start)
    while previous is not None and previous < end:
        following = trigger.get_next_fire_time(previous, previous + timedelta(microseconds=1))
        if following is None:
            break
        shortest = min(shortest, (following - previous).total_seconds())
        previous = following
    return shortest


def checked_cron(spec: str, minimum_seconds: float) -> str:
    """The cron expression of a spec that never runs more often than `minimum_seconds`."""
    cron = cron_of(spec)
    gap = shortest_gap_seconds(cron)
    if gap < minimum_seconds:
        raise ScheduleError(
            f"schedule runs as often as every {gap / 60:g} min; the least interval is "
            f"{minimum_seconds / 60:g} min (schedule.min_instance_interval_seconds): every "
            "run is a full diagnostic, and the sweep already covers every instance")
    return cron


@dataclass(frozen=True)
class SweepSummary:
    """What one scheduled sweep did."""

    instances: int
    unhealthy: int
    duration_seconds: float
    docker_ok: bool


def run_sweep(engine: DiagnosticsEngine, store: SweepStore | None,
              trigger: str = "scheduled") -> SweepSummary:
    """Diagnose every instance and record the sweep's own facts for /metrics."""
    started, began = time.monotonic(), datetime.now(UTC)
    found = engine.discover(fresh=True)
    diagnostics = engine.sweep(trigger)
    duration = time.monotonic() - started
    summary = SweepSummary(len(diagnostics), sum(not d.healthy for d in diagnostics), duration,
                           found.docker_ok)
    if store is not None:
        store.set_instances(instance_infos(found),
                            departed_before=began if found.complete else None)
        store.set_meta("docker_ok", "1" if found.docker_ok else "0")
        store.set_meta("sweep_duration_seconds", f"{duration:.3f}")
        store.set_meta("last_sweep_at", datetime.now(UTC).isoformat())
    log.info("sweep: %d instances, %d unhealthy, %.1fs", summary.instances, summary.unhealthy,
             duration)
    return summary


class DiagnosticScheduler:
    """Runs the global sweep and per-instance schedules; jobs never overlap."""

    def __init__(self, engine: DiagnosticsEngine, store: SweepStore | None,
                 sweep_interval_seconds: float, *, sweep_enabled: bool = True,
                 min_instance_interval_seconds: float = 0.0,
                 housekeeping: Callable[[], None] | None = None,
                 probe: Callable[[], object] | None = None,
                 probe_interval_seconds: float = 30.0) -> None:
        # housekeeping runs after each sweep (the store's retention).
        self._engine = engine
        self._store = store
        self._min_interval = min_instance_interval_seconds
        self._housekeeping = housekeeping
        self.failures = 0
        self._stopping = False
        self._scheduler = BackgroundScheduler(
            timezone=UTC,
            job_defaults={"max_instances": 1, "coalesce": True,
                          "misfire_grace_time": _MISFIRE_GRACE_SECONDS})
        self._scheduler.add_listener(self._on_error, EVENT_JOB_ERROR)
        if sweep_enabled:
            self._scheduler.add_job(self._sweep, IntervalTrigger(seconds=sweep_interval_seconds),
                                    id=_SWEEP_JOB, name="global sweep",
                                    next_run_time=datetime.now(UTC))
        if probe is not None:
            # The first round one interval after the start: the sweep is judging then.
            self._scheduler.add_job(probe, IntervalTrigger(seconds=probe_interval_seconds),
                                    id=_PROBE_JOB, name="quick probe")

    def start(self) -> None:
        """Start running jobs in background threads."""
        self._scheduler.start()

    def shutdown(self) -> None:
        """Stop; a running job is not waited for."""
        self._stopping = True
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def set_instance(self, instance_id: str, spec: str | None) -> None:
        """Schedule one instance's diagnostics by spec, or remove its schedule (None)."""
        job_id = f"instance:{instance_id}"
        if spec is None:
            if self._scheduler.get_job(job_id):
                self._scheduler.remove_job(job_id)
            return
        trigger = CronTrigger.from_crontab(checked_cron(spec, self._min_interval), timezone=UTC)
        self._scheduler.add_job(self._instance, trigger, args=[instance_id], id=job_id,
                                name=f"diagnose {instance_id}", replace_existing=True)

    def instance_jobs(self) -> dict[str, datetime | None]:
        """Scheduled instance ids and their next run time."""
        out: dict[str, datetime | None] = {}
        for job in self._scheduler.get_jobs():
            if job.id.startswith("instance:"):
                out[job.id.split(":", 1)[1]] = getattr(job, "next_run_time", None)
        return out

    @contextmanager
    def _ended_by_shutdown(self, job: str) -> Iterator[None]:
        """A job still running at shutdown fails on what was closed under it: not a failure."""
        try:
            yield
        except DoctorError as exc:
            if not self._stopping:
                raise
            log.info("scheduled job %s stopped by shutdown: %s", job, exc)

    def _sweep(self) -> None:
        with self._ended_by_shutdown(_SWEEP_JOB):
            run_sweep(self._engine, self._store)
            if self._housekeeping is not None:
                self._housekeeping()

    def _instance(self, instance_id: str) -> None:
        with self._ended_by_shutdown(f"instance:{instance_id}"):
            self._engine.sweep("scheduled", [instance_id])

    def _on_error(self, event: JobExecutionEvent) -> None:
        # A failing job is logged and counted; the scheduler itself keeps going.
        self.failures += 1
        log.error("scheduled job %s failed: %s", event.job_id, event.exception)
        if self._store is not None and event.job_id != _PROBE_JOB:
            self._store.record_run("scheduled", "error")
