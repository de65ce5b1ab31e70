"""Reading an instance's container logs as structured entries, and finding known failures."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta

from exporter.discovery.model import Instance
from exporter.dockerhost import DockerHost
from exporter.errors import DoctorError
from exporter.logs.cache import LogCache
from exporter.logs.model import LEVELS, LogEntry, LogSummary, at_least
from exporter.logs.parsers import parse_lines
from exporter.logs.patterns import PatternMatch, match_patterns
from exporter.logs.query import parse_level
from exporter.redaction import Redactor

RedactorSource = Redactor | Callable[[Instance], Redactor]


class LogAnalyzer:
    """Reads, parses and redacts an instance's logs: one Docker call per component.

    With a cache, a component read before is read only from where that read ended (see
    LogCache); the answer is the same.
    """

    def __init__(self, docker: DockerHost, redactor: RedactorSource | None = None, *,
                 timeout: float = 5.0, workers: int = 4, cache: LogCache | None = None) -> None:
        self._docker = docker
        self._redactor = redactor
        self._timeout = timeout
        self._workers = max(1, workers)
        self._cache = cache

    def redactor_for(self, instance: Instance) -> Redactor:
        """The redactor for this instance's logs, always knowing the instance's own secrets."""
        source = self._redactor
        if source is None:
            base = Redactor()
        elif isinstance(source, Redactor):
            base = source
        else:
            base = source(instance)
        return base.extend(instance.secrets())

    def get_structured_logs(
        self, instance: Instance, services: Sequence[str] | None = None,
        level: str = "error", since_seconds: float = 3600.0, max_lines: int = 1000, *,
        now: datetime | None = None,
    ) -> tuple[list[LogEntry], LogSummary]:
        """Entries at or above level from the last since_seconds, newest first, and a summary.

        services are compose service names (None: every component that has a container);
        max_lines caps the lines read per component. Raises ValueError on a bad argument.
        """
        minimum = parse_level(level)
        if since_seconds <= 0:
            raise ValueError("since_seconds must be positive")
        if max_lines < 1:
            raise ValueError("max_lines must be at least 1")
        names = self._select(instance, services)
        until = now or datetime.now(UTC)
        since = until - timedelta(seconds=since_seconds)
        read, unreadable, truncated = self._read(instance, names, since, until, max_lines)
        entries = [e for comp_entries in read.values() for e in comp_entries
                   if e.timestamp >= since and at_least(e.level, minimum)]
        entries.sort(key=lambda e: e.timestamp, reverse=True)
        shown = [lvl for lvl in LEVELS if at_least(lvl, minimum)]
        by_component: dict[str, dict[str, int]] = {
            comp: dict.fromkeys(shown, 0) for comp in read}
        for entry in entries:
            by_component[entry.component][entry.level] += 1
        summary = LogSummary(
            total_entries=len(entries),
            error_count=sum(1 for e in entries if at_least(e.level, "error")),
            warning_count=sum(1 for e in entries if e.level == "warning"),
            by_component=by_component, since=since, until=until,
            truncated=tuple(sorted(truncated)), unreadable=unreadable,
        )
        return entries, summary

    def analyze(self, entries: Sequence[LogEntry],
                now: datetime | None = None) -> list[PatternMatch]:
        """Known failure patterns in the entries (read them at level debug or info, so the
        start-up lines that show a fault is over are among them), as of now."""
        return match_patterns(entries, now=now)

    def _select(self, instance: Instance, services: Sequence[str] | None) -> list[str]:
        if services is None:
            return [name for name, comp in instance.components.items() if comp.container]
        unknown = [s for s in services if s not in instance.components]
        if unknown:
            raise ValueError(f"unknown service(s) {', '.join(sorted(unknown))[:200]}; "
                             f"known: {', '.join(instance.components)}")
        return list(dict.fromkeys(services))

    def _read(self, instance: Instance, names: list[str], since: datetime, until: datetime,
              max_lines: int) -> tuple[dict[str, list[LogEntry]], dict[str, str], list[str]]:
        """Each component's entries in the window, why the others could not be read, and
        which ones max_lines cut."""
        redactor = self.redactor_for(instance)
        unreadable: dict[str, str] = {}
        targets: dict[str, str] = {}
        for name in names:
            container = instance.component(name).container
            if container is None:
                unreadable[name] = "no container"
            else:
                targets[name] = container.id
        read: dict[str, list[LogEntry]] = {}
        truncated: list[str] = []
        if not targets:
            return read, unreadable, truncated
        if self._cache is not None:
            # Containers nobody read within the window (removed, recreated, or read with
            # other secrets) hold nothing a read of this window could use.
            self._cache.forget_idle(since)
        # A hanging Docker call costs one timeout, not one per component.
        pool = ThreadPoolExecutor(max_workers=min(self._workers, len(targets)),
                                  thread_name_prefix="logs")
        try:
            futures = {name: pool.submit(self._read_one, name, container_id, redactor, since,
                                         until, max_lines)
                       for name, container_id in targets.items()}
            wait(futures.values(), timeout=self._timeout)
            for name, future in futures.items():
                outcome = self._outcome(future, redactor)
                if isinstance(outcome, str):
                    unreadable[name] = outcome
                    continue
                read[name], cut = outcome
                if cut:
                    truncated.append(name)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return read, unreadable, truncated

    def _read_one(self, component: str, container_id: str, redactor: Redactor,
                  since: datetime, until: datetime, max_lines: int
                  ) -> tuple[list[LogEntry], bool]:
        """One container's entries in the window, and whether max_lines cut them."""
        if self._cache is not None:
            cached = self._cache.read(self._docker, container_id, component, redactor,
                                      since=since, until=until, max_lines=max_lines)
            return cached.entries, cached.truncated
        # Whole seconds: Docker's since includes the lines of the second the window
        # starts in; entries before the window's start are dropped after parsing.
        lines = self._docker.logs(container_id, since=float(int(since.timestamp())),
                                  tail=max_lines)
        return parse_lines(component, lines, redactor, until), len(lines) >= max_lines

    def _outcome(self, future: Future[tuple[list[LogEntry], bool]], redactor: Redactor
                 ) -> tuple[list[LogEntry], bool] | str:
        """A read's entries and whether max_lines cut them, or why it gave none."""
        if not future.done():
            return f"no answer from Docker within {self._timeout:g}s"
        try:
            return future.result()
        except DoctorError as exc:
            return redactor.text(str(exc))
