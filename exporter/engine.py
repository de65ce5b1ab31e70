"""The diagnostics engine: concurrent checks, cache, rate limit, single flight, sweeps.

The engine is a library: the CLI, the exporter and the action API all call it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal, TypeVar

import httpx

from exporter.checks import ALL_CHECKS, Check, CheckContext, CheckResult, Findings, checks_by_name
from exporter.checks.auth import AUTH_SERVICE
from exporter.checks.base import status_of
from exporter.checks.sockets import SocketOwners
from exporter.config import INSTANCE_ID_PATTERN, Config
from exporter.diagnostic import Diagnostic, UserTest
from exporter.discovery import CRITICAL_PATH, Discovery, Instance, discover
from exporter.discovery.topology import topology_of
from exporter.dockerhost import DockerHost
from exporter.errors import DoctorError, InstanceNotFoundError
from exporter.issues import Issue, make_issue
from exporter.lifecycle import settle
from exporter.logs.staleness import settle as settle_present
from exporter.redaction import Redactor
from exporter.results import MemoryResultStore, ResultStore
from exporter.rootcause import find_root_cause, order_issues

log = logging.getLogger(__name__)
T = TypeVar("T")

# quick_health: the checks and components of the path a Studio "create user" takes.
QUICK_CHECKS: tuple[str, ...] = ("container_status", "database_connection", "api_endpoints")
# Runs that include the synthetic user test at most every synthetic_user_interval_seconds
# per instance: the sweep, and the event-driven runs (a crash loop sends events for as
# long as it lasts). On-demand, operation and watch runs always include it: the quick
# probe asks for a diagnostic when the admin API's answer changed, which the test judges.
# After a failed test every run includes it until it passes: its failure is published until
# a test says otherwise, so an outage that is over must not wait an interval to be seen so.
PACED_SYNTHETIC_TRIGGERS: frozenset[str] = frozenset({"scheduled", "event"})
# Discovery is reused this long, so a burst of requests costs one Docker listing.
_DISCOVERY_REUSE_SECONDS = 2.0


@dataclass(frozen=True)
class RunOutcome:
    """A diagnostic as handed to a caller, with how it was obtained."""

    diagnostic: Diagnostic
    cached: bool = False
    rate_limited: bool = False
    retry_after_seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        """The public JSON shape, with the caching flags."""
        out = self.diagnostic.to_dict(cached=self.cached, rate_limited=self.rate_limited)
        if self.rate_limited:
            out["retry_after_seconds"] = round(self.retry_after_seconds, 1)
        return out


@dataclass(frozen=True)
class RunStart:
    """What `start` did: started a run, found one running, or was rate limited."""

    status: Literal["started", "running", "rate_limited"]
    outcome: RunOutcome | None = None


@dataclass(frozen=True)
class QuickHealth:
    """The critical path's health, for use right after an operation."""

    instance_id: str
    healthy: bool
    issues: tuple[Issue, ...]
    duration_seconds: float

    def to_dict(self) -> dict[str, object]:
        """JSON shape."""
        return {"instance_id": self.instance_id, "healthy": self.healthy,
                "duration_seconds": round(self.duration_seconds, 3),
                "issues": [i.to_dict() for i in self.issues]}


class DiagnosticsEngine:
    """Runs checks against discovered instances; thread-safe; one per process."""

    def __init__(self, config: Config, docker: DockerHost, store: ResultStore | None = None,
                 *, checks: Mapping[str, Check] | None = None,
                 http: httpx.Client | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.docker = docker
        self.store: ResultStore = store if store is not None else MemoryResultStore()
        self.checks = dict(checks) if checks is not None else dict(checks_by_name())
        diag = config.diagnostics
        self._http = http or httpx.Client(timeout=httpx.Timeout(diag.timeout_seconds),
                                          follow_redirects=False, trust_env=False)
        self._clock = clock
        # Who holds each listening socket, learnt once for every diagnostic of the engine.
        self.sockets = SocketOwners()
        self._lock = threading.Lock()
        self._inflight: dict[str, Future[Diagnostic]] = {}
        self._last_on_demand: dict[str, float] = {}
        # instance id -> when the synthetic user test last ran, and whether it passed.
        self._last_synthetic: dict[str, tuple[float, bool]] = {}
        self._discovery: tuple[float, Discovery] | None = None
        self._instance_pool = ThreadPoolExecutor(diag.concurrency, "ubd-instance")
        self._check_pool = ThreadPoolExecutor(diag.concurrency * len(self.checks) or 1,
                                              "ubd-check")

    def close(self) -> None:
        """Stop the worker pools and the HTTP client."""
        self._instance_pool.shutdown(wait=False, cancel_futures=True)
        self._check_pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    # discovery -----------------------------------------------------------------------

    def discover(self, fresh: bool = False) -> Discovery:
        """Discovery, reused for a moment so bursts cost one Docker listing."""
        now = self._clock()
        with self._lock:
            if not fresh and self._discovery and now - self._discovery[0] < \
                    _DISCOVERY_REUSE_SECONDS:
                return self._discovery[1]
        found = discover(self.config, self.docker)
        with self._lock:
            self._discovery = (self._clock(), found)
        return found

    def instance(self, instance_id: str, fresh: bool = False) -> Instance:
        """A discovered instance; InstanceNotFoundError for unknown or invalid ids."""
        if not isinstance(instance_id, str) or not INSTANCE_ID_PATTERN.fullmatch(instance_id):
            raise InstanceNotFoundError("unknown instance")
        found = self.discover(fresh).instances.get(instance_id)
        if found is None:
            raise InstanceNotFoundError(f"unknown instance {instance_id}")
        return found

    def knows(self, instance_id: str) -> bool:
        """True when instance_id names a discovered instance."""
        try:
            self.instance(instance_id)
        except InstanceNotFoundError:
            return False
        return True

    # running -------------------------------------------------------------------------

    def run(self, instance_id: str, *, trigger: str = "on_demand", use_cache: bool = True,
            checks: Sequence[str] | None = None, limited: bool | None = None) -> RunOutcome:
        """A diagnostic, honouring cache, rate limit and single flight.

        `limited` says whether the per-instance rate limit applies (default: to on-demand
        runs only). Requests that anyone with an operator token can repeat (a webhook, a
        dry run) pass True, so they share one window with run-diagnostics: within it they
        get the latest result, `rate_limited`, instead of another full run.
        """
        limited = trigger == "on_demand" if limited is None else limited
        selected = self._select(checks)
        instance = self.instance(instance_id)
        served = self._served(instance_id, limited, use_cache, selected)
        if served is not None:
            return served
        return RunOutcome(self._single_flight(instance, trigger, selected, limited=limited))

    def start(self, instance_id: str, *, checks: Sequence[str] | None = None) -> RunStart:
        """Begin a fresh on-demand run in the background, under run()'s rules.

        Rate limited: the latest result, as run() would answer. A run of the instance in
        flight (from any caller): joined, not repeated. Follow it with `running`.
        """
        selected = self._select(checks)
        instance = self.instance(instance_id)
        served = self._served(instance_id, True, False, selected)
        if served is not None:
            return RunStart("rate_limited", served)
        future, owner = self._claim(instance.id, limited=True)
        if not owner:
            return RunStart("running")
        threading.Thread(target=self._fulfil_logged, args=(instance, selected, future),
                         daemon=True, name=f"ubd-run-{instance.id}").start()
        return RunStart("started")

    def running(self, instance_id: str) -> bool:
        """Whether a diagnostic of the instance is in flight in this process."""
        with self._lock:
            return instance_id in self._inflight

    def _served(self, instance_id: str, limited: bool, use_cache: bool,
                selected: tuple[str, ...]) -> RunOutcome | None:
        """The cached or rate-limited answer a limited request gets instead of a run."""
        now = self._clock()
        latest = self.store.latest(instance_id)
        if limited and latest is not None:
            age = latest.age_seconds(_utc(now))
            covers = set(selected) <= set(latest.results)
            if use_cache and covers and age < self.config.diagnostics.cache_ttl_seconds:
                return RunOutcome(latest, cached=True)
            with self._lock:
                last = self._last_on_demand.get(instance_id)
                running = instance_id in self._inflight
            window = self.config.diagnostics.rate_limit_seconds
            if not running and last is not None and now - last < window:
                return RunOutcome(latest, cached=True, rate_limited=True,
                                  retry_after_seconds=window - (now - last))
        return None

    def _claim(self, instance_id: str, *, limited: bool) -> tuple[Future[Diagnostic], bool]:
        """The instance's run in flight, or a new one owned by the caller (True).

        A new limited run opens the instance's rate-limit window.
        """
        with self._lock:
            future = self._inflight.get(instance_id)
            if future is not None:
                return future, False
            future = Future()
            self._inflight[instance_id] = future
            if limited:
                self._last_on_demand[instance_id] = self._clock()
            return future, True

    def _single_flight(self, instance: Instance, trigger: str,
                       selected: tuple[str, ...], *, limited: bool = False) -> Diagnostic:
        future, owner = self._claim(instance.id, limited=limited)
        if not owner:
            return future.result()
        return self._fulfil(instance, trigger, selected, future)

    def _fulfil_logged(self, instance: Instance, selected: tuple[str, ...],
                       future: Future[Diagnostic]) -> None:
        try:
            self._fulfil(instance, "on_demand", selected, future)
        except Exception as exc:  # nobody waits on a background run: say it here
            log.error("background diagnostic of %s failed: %s", instance.id, exc)

    def _fulfil(self, instance: Instance, trigger: str, selected: tuple[str, ...],
                future: Future[Diagnostic]) -> Diagnostic:
        try:
            diagnostic = self._diagnose(instance, trigger, selected)
            future.set_result(diagnostic)
            return diagnostic
        except BaseException as exc:
            future.set_exception(exc)
            raise
        finally:
            with self._lock:
                self._inflight.pop(instance.id, None)

    def sweep(self, trigger: str = "scheduled", instance_ids: Iterable[str] | None = None,
              checks: Sequence[str] | None = None) -> list[Diagnostic]:
        """Diagnose every instance (or the named ones) concurrently, one discovery for all."""
        found = self.discover(fresh=True)
        wanted = list(instance_ids) if instance_ids is not None else list(found.instances)
        selected = self._select(checks)
        return _gather("sweep", [
            self._instance_pool.submit(self._single_flight, found.instances[i], trigger,
                                       selected)
            for i in wanted if i in found.instances])

    def run_all(self, *, use_cache: bool = True, trigger: str = "on_demand",
                only: Callable[[str], bool] | None = None) -> list[RunOutcome]:
        """run() for every instance (those `only` admits), concurrently.

        Instances unknown meanwhile are skipped; those `only` refuses are never run.
        """
        ids = [i for i in self.discover(fresh=True).instances if only is None or only(i)]
        return _gather("run_all", [
            self._instance_pool.submit(self.run, i, trigger=trigger, use_cache=use_cache)
            for i in ids])

    def quick_health(self, instance_id: str) -> QuickHealth:
        """The critical path only (db, auth, rest, kong); not cached, not rate limited."""
        instance = self.instance(instance_id, fresh=True)
        started = time.monotonic()
        results = self._run_checks(instance, QUICK_CHECKS, synthetic=False)
        issues = [i for r in results.values() for i in r.issues
                  if i.component in CRITICAL_PATH and i.severity == "critical"]
        return QuickHealth(instance_id, not issues, tuple(order_issues(issues)),
                           time.monotonic() - started)

    # internals ------------------------------------------------------------------------

    def _select(self, checks: Sequence[str] | None) -> tuple[str, ...]:
        if not checks:
            return tuple(c for c in ALL_CHECKS if c in self.checks)
        unknown = [c for c in checks if c not in self.checks]
        if unknown:
            raise DoctorError(f"unknown check(s): {', '.join(unknown)}; "
                              f"known: {', '.join(ALL_CHECKS)}")
        return tuple(dict.fromkeys(checks))

    def _synthetic_due(self, instance_id: str, trigger: str) -> bool:
        if trigger not in PACED_SYNTHETIC_TRIGGERS:
            return True
        interval = self.config.diagnostics.synthetic_user_interval_seconds
        with self._lock:
            last = self._last_synthetic.get(instance_id)
        return last is None or not last[1] or self._clock() - last[0] >= interval

    def _diagnose(self, instance: Instance, trigger: str,
                  selected: tuple[str, ...]) -> Diagnostic:
        started = time.monotonic()
        synthetic = "auth_service" in selected and self._synthetic_due(instance.id, trigger)
        try:
            results = self._run_checks(instance, selected, synthetic)
        except Exception:
            self.store.record_run(trigger, "error")
            raise
        test = UserTest.of(AUTH_SERVICE.details(results.get("auth_service")).get(
            "synthetic_user"), _utc(self._clock()))
        if synthetic:
            self._paced_synthetic(instance.id, test)
        if test is None and "auth_service" in results:
            test = self._carried_user_test(instance.id)
        # What live evidence shows over is a recent event, not an issue (present only).
        topology = topology_of(instance)
        results, events = settle_present(results, topology)
        issues = order_issues([*instance.problems, *(i for r in results.values()
                                                     for i in r.issues)])
        # An instance being created, stopped by its owner or never started is down as
        # expected: its state is the root cause and nothing of that alerts.
        settled = settle(instance, issues, _utc(self._clock()))
        diagnostic = Diagnostic(
            instance_id=instance.id, timestamp=_utc(self._clock()),
            duration_seconds=time.monotonic() - started, results=results,
            issues=settled.issues if settled else tuple(issues),
            root_cause=settled.root_cause if settled else find_root_cause(
                issues, topology=topology),
            trigger=trigger, recent_events=events, user_test=test,
        )
        self.store.save(diagnostic)
        self.store.record_run(trigger, "healthy" if diagnostic.healthy else "unhealthy")
        return diagnostic

    def _paced_synthetic(self, instance_id: str, test: UserTest | None) -> None:
        """Note a run that asked for the synthetic user test: when, and whether it passed.

        A test that did not run (no service key, GoTrue hanging) leaves a failure standing
        and otherwise counts as a pass: nothing is gained by asking again before the interval.
        """
        with self._lock:
            last = self._last_synthetic.get(instance_id)
            passed = test.passed if test is not None else last is None or last[1]
            self._last_synthetic[instance_id] = (self._clock(), passed)

    def _carried_user_test(self, instance_id: str) -> UserTest | None:
        """The latest synthetic user test of an earlier diagnostic, if any."""
        try:
            latest = self.store.latest(instance_id)
        except DoctorError as exc:  # the result is then not carried: no series, not a wrong one
            log.warning("latest diagnostic of %s not read: %s", instance_id, exc)
            return None
        return latest.user_test if latest is not None else None

    def _run_checks(self, instance: Instance, names: Sequence[str],
                    synthetic: bool) -> dict[str, CheckResult]:
        if not instance.runtime_known:
            # Without Docker every check would only repeat DOCKER_UNREACHABLE.
            issue = make_issue("DOCKER_UNREACHABLE", check="container_status",
                               message="Docker could not be read; the instance's state is "
                                       "unknown")
            return {n: CheckResult(n, "skipped", 0.0, (issue,) if n == "container_status"
                                   else (), {"skipped": "docker unreachable"}) for n in names}
        ctx = CheckContext(
            instance=instance, config=self.config.diagnostics, docker=self.docker,
            http=self._http, redactor=Redactor(instance.secrets()), now=_utc(self._clock()),
            run_synthetic_user=synthetic, sockets=self.sockets,
        )
        started = time.monotonic()
        futures = {n: self._check_pool.submit(self._timed, self.checks[n], ctx) for n in names}
        # A check bounds each of its calls; this outer bound catches a check that
        # makes several slow calls in a row.
        deadline = started + self.config.diagnostics.timeout_seconds * 3 + 1
        results: dict[str, CheckResult] = {}
        for name, future in futures.items():
            try:
                results[name] = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                results[name] = CheckResult(name, "failed", time.monotonic() - started, (),
                                            {"error": "check did not finish in time"})
        return results

    @staticmethod
    def _timed(check: Check, ctx: CheckContext) -> CheckResult:
        started = time.monotonic()
        try:
            findings = check.run(ctx)
        except Exception as exc:  # a bug in a check must not hide the other checks
            log.exception("check %s failed on %s", check.name, ctx.instance.id)
            findings = Findings(details={"error": ctx.redactor.text(f"{type(exc).__name__}: "
                                                                    f"{exc}")},
                                skipped="internal error")
        findings = replace(findings, issues=tuple(
            replace(i, evidence=ctx.redactor.data(dict(i.evidence)),
                    message=ctx.redactor.text(i.message)) for i in findings.issues),
            details=ctx.redactor.data(dict(findings.details)))
        return CheckResult(check.name, status_of(findings), time.monotonic() - started,
                           findings.issues, findings.details)


def _gather(what: str, futures: Sequence[Future[T]]) -> list[T]:
    """Results in submission order; an instance that failed is logged and left out."""
    out: list[T] = []
    for future in futures:
        try:
            out.append(future.result())
        except DoctorError as exc:
            log.error("%s: %s", what, exc)
    return out


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
