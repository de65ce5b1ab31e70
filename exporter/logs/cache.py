"""Parsed, redacted log entries kept per container between sweeps.

A sweep reads each component's last window of logs. Most of those lines were already read,
parsed and redacted by the sweep before, so LogCache keeps the result per container and
asks Docker only for what follows it. Every answer equals what a fresh read of the window
would give (the one Docker call LogAnalyzer makes without a cache): the same entries,
levels and truncation.

What a fresh read is: Docker takes the last `tail` lines of the container's log, then drops
those stamped before `since`. Docker stamps a line when it reads it from the container's
stdout or stderr and writes it right after; the two streams are read separately, so a
line is sometimes written after lines stamped a few microseconds later. The cache assumes
that a line is written within JITTER (one second) of being stamped. Then a line is never
stamped JITTER before a line written ahead of it, and lines written after a read are not
stamped JITTER before it. Under that assumption the cache keeps, per container, a
contiguous run of the log up to its end as of the last read, as segments (entries with
the lines they were made of, see parsers.Segment), and:
- Reads only from the first line of a late segment on, inclusive: parsing folds
  continuation lines (DETAIL lines, stack traces) into the entry before them, so the last
  entries may still grow. Those segments are re-read, checked against the cached ones and
  replaced; a read that does not reproduce them is not trusted.
- Cuts the run as a fresh read would: the last max_lines lines, then those stamped at or
  after the window's start. Where the cut falls inside a multi-line entry, the entry's
  remaining lines are parsed on their own, as a read starting there parses them. Where
  lines out of time order make the cut ragged, or the run may lack lines a fresh read
  would see, the window is read in full, as without a cache.

Entries are redacted with the redactor of the read; the key includes a digest of its
secrets, so entries redacted with an old set of secrets are never served once they change.
The digest is kept in memory only.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from exporter.dockerhost import DockerHost
from exporter.logs.model import LogEntry
from exporter.logs.parsers import Segment, parse_segments, split_docker_timestamp
from exporter.redaction import Redactor

# A cached entry takes about 650 bytes (measured on the test fleet's logs): 50,000 keep
# the cache near 35 MB, within the exporter's memory budget, and hold ~18 instances whose
# components log like the test fleet's. Past that, the least recently read are read in full.
DEFAULT_MAX_ENTRIES = 50_000
# The longest Docker takes from stamping a line to writing it to the log (it takes
# microseconds; the bound only has to hold).
JITTER = timedelta(seconds=1)
_MICROSECOND = timedelta(microseconds=1)
# The first try of an incremental read asks for the lines re-read plus a few times what the
# last read brought, plus this; an answer that does not reach back to the re-read lines is
# repeated with the caller's cap.
_TAIL_SLACK = 32
_TAIL_GROWTH = 4
# A run whose lines are out of time order this often is not kept: checking every cut
# against that many inversions costs more than parsing.
_MAX_DISORDER = 64

_Key = tuple[str, str, str]  # container id, component, digest of the redactor's secrets
# (lo, hi]: a since in it would not split the run into older lines, then newer ones.
_Interval = tuple[datetime, datetime]


@dataclass(frozen=True)
class LogRead:
    """The entries of one component's window, oldest first, and whether the cap cut it."""

    entries: list[LogEntry]
    truncated: bool


@dataclass(frozen=True)
class CacheStats:
    """What the cache holds and how its reads went, for tests and benchmarks."""

    containers: int
    entries: int
    full_reads: int
    incremental_reads: int


@dataclass(frozen=True)
class _Run:
    """A contiguous run of a container's log up to its end when read, as segments."""

    segments: tuple[Segment, ...]
    lines: int  # Docker lines in segments
    complete_from: datetime  # every line before the run is stamped earlier than this
    disorder: tuple[_Interval, ...]  # since values that would not cut the run cleanly
    newest: datetime | None  # the latest time of any line seen in this log
    read_at: datetime  # `until` of the last read, to drop containers nobody reads any more
    new_lines: int  # lines the last incremental read brought: sizes the next first try


class LogCache:
    """Per-container parsed log entries, kept between reads; thread-safe, bounded in size."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must not be negative")
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self._runs: OrderedDict[_Key, _Run] = OrderedDict()  # least recently used first
        self._entries = 0
        self._full_reads = 0
        self._incremental_reads = 0

    def read(self, docker: DockerHost, container_id: str, component: str, redactor: Redactor,
             *, since: datetime, until: datetime, max_lines: int) -> LogRead:
        """The component's entries from since on (at most max_lines Docker lines), as a fresh
        read gives them; raises what DockerHost.logs raises.

        since is floored to the second, as the window's reads always were. until is the
        time of the query (the time of a line without one).
        """
        start = datetime.fromtimestamp(int(since.timestamp()), UTC)
        key = (container_id, component, redactor.digest())
        with self._lock:
            run = self._runs.get(key)
            if run is not None:
                self._runs.move_to_end(key)
        answer: tuple[_Run | None, LogRead] | None = None
        if run is not None:
            extended = self._extend(docker, container_id, component, redactor, run, until,
                                    max_lines)
            if extended is not None:
                answer = _window(extended, start, max_lines, component, redactor, until)
        if answer is None:
            answer = self._full(docker, container_id, component, redactor, start, until,
                                max_lines)
        self._store(key, answer[0])
        return answer[1]

    def forget_idle(self, before: datetime) -> None:
        """Drop containers not read since before: nothing they hold is that recent."""
        with self._lock:
            for key in [k for k, run in self._runs.items() if run.read_at < before]:
                self._entries -= len(self._runs.pop(key).segments)

    def clear(self) -> None:
        """Drop everything."""
        with self._lock:
            self._runs.clear()
            self._entries = 0

    def stats(self) -> CacheStats:
        """Containers and entries held, and the reads made so far."""
        with self._lock:
            return CacheStats(len(self._runs), self._entries, self._full_reads,
                              self._incremental_reads)

    def _full(self, docker: DockerHost, container_id: str, component: str, redactor: Redactor,
              start: datetime, until: datetime, max_lines: int) -> tuple[_Run | None, LogRead]:
        """The read without a cache, and the run to keep from it."""
        lines = docker.logs(container_id, since=start.timestamp(), tail=max_lines)
        with self._lock:
            self._full_reads += 1
        segments = parse_segments(component, lines, redactor, until)
        truncated = len(lines) >= max_lines
        read = LogRead(_entries(segments), truncated)
        if not all(s.timed for s in segments):
            return None, read
        newest = max((_high(s) for s in segments), default=None)
        if truncated:
            # The log's last max_lines lines: contiguous, and what precedes them was
            # written before their first line, so stamped no later than JITTER after it.
            complete_from = _first(segments[0]) + JITTER + _MICROSECOND
            kept = segments
        else:
            # Docker left out lines stamped before start; written out of order, some may
            # sit among the first lines of the answer, but not after a line stamped JITTER
            # after start. The run begins at the first such line.
            complete_from = start + JITTER
            kept = _from_first_line_at(segments, complete_from, component, redactor, until)
        disorder = _disorder(kept)
        if disorder is None:
            return None, read
        run = _Run(tuple(kept), sum(s.lines for s in kept), complete_from, tuple(disorder),
                   newest, until, 0)
        return run, read

    def _extend(self, docker: DockerHost, container_id: str, component: str,
                redactor: Redactor, run: _Run, until: datetime, max_lines: int) -> _Run | None:
        """The run extended to the log's end by reading only its last part; None when the
        log does not continue it as expected."""
        point = _reread_from(run)
        if point is None:
            return None
        index, start = point
        segments = run.segments
        again = segments[index:]
        reread = sum(s.lines for s in again)
        tail = min(max_lines, reread + _TAIL_GROWTH * run.new_lines + _TAIL_SLACK)
        lines = docker.logs(container_id, since=start.timestamp(), tail=tail)
        fresh = parse_segments(component, lines, redactor, until)
        if not _complete(again, fresh, len(lines), tail) and tail < max_lines:
            # The answer did not reach back to the re-read lines: more lines arrived.
            tail = max_lines
            lines = docker.logs(container_id, since=start.timestamp(), tail=tail)
            fresh = parse_segments(component, lines, redactor, until)
        with self._lock:
            self._incremental_reads += 1
        if not all(s.timed for s in fresh):
            return None
        newest = max((_high(s) for s in fresh), default=run.newest)
        if run.newest is not None and newest is not None:
            newest = max(newest, run.newest)
        disorder = _disorder(fresh)
        if disorder is None:
            return None
        if not _complete(again, fresh, len(lines), tail):
            if len(lines) < max_lines:
                return None  # the log no longer holds the lines read before
            # max_lines lines, all at or after since: the log's last lines, contiguous.
            return _Run(tuple(fresh), len(lines),
                        _first(fresh[0]) + JITTER + _MICROSECOND, tuple(disorder), newest,
                        until, len(lines))
        # Every line before the re-read ones is older than start, every re-read one is not:
        # no inversion spans the two parts.
        merged_disorder = (*(d for d in run.disorder if d[1] < start), *disorder)
        if len(merged_disorder) > _MAX_DISORDER:
            return None
        return _Run((*segments[:index], *fresh), run.lines - reread + len(lines),
                    run.complete_from, merged_disorder, newest, until, len(lines) - reread)

    def _store(self, key: _Key, run: _Run | None) -> None:
        """Keep the container's run (or drop it), then evict down to the entry budget."""
        with self._lock:
            old = self._runs.pop(key, None)
            if old is not None:
                self._entries -= len(old.segments)
            if run is not None:
                self._runs[key] = run
                self._entries += len(run.segments)
            # Least recently used first; a run without entries frees nothing: kept, it goes
            # back in as if just used.
            empty: list[tuple[_Key, _Run]] = []
            while self._entries > self._max_entries:
                victim, evicted = self._runs.popitem(last=False)
                if evicted.segments:
                    self._entries -= len(evicted.segments)
                else:
                    empty.append((victim, evicted))
            self._runs.update(empty)


def _reread_from(run: _Run) -> tuple[int, datetime] | None:
    """Where a read of the run's last part starts: a segment, and the time to read since.

    A read since the earliest time of a segment and those after it gives exactly these
    segments and the new lines when: no line before them is that recent (no inversion
    spans the time), the lines before the run are older, and new lines cannot be older:
    they were written after the last read and after the newest line seen, so they are
    stamped at most JITTER before either. An empty run is continued from after every
    line seen.
    """
    segments = run.segments
    latest = max(run.read_at, run.newest or run.read_at) - JITTER
    if not segments:
        start = run.complete_from
        if run.newest is not None:
            start = max(start, run.newest + _MICROSECOND)
        return (0, start) if start <= latest else None
    start = _NEVER
    for index in range(len(segments) - 1, -1, -1):
        low = _low(segments[index])
        start = low if index == len(segments) - 1 else min(start, low)
        if start > latest:
            continue
        if start < run.complete_from:
            return None  # and so is every earlier start
        if index > 0 and _high(segments[index - 1]) >= start:
            continue
        if _inside(start, run.disorder):
            continue
        return index, start
    return None


def _complete(again: Sequence[Segment], fresh: Sequence[Segment], lines: int,
              tail: int) -> bool:
    """True when a read since the re-read segments' start gave all of them and every line
    after: it starts with them, or (with none to re-read) the tail did not cut it."""
    return _continues(again, fresh) if again else lines < tail


def _continues(cached: Sequence[Segment], fresh: Sequence[Segment]) -> bool:
    """True when the fresh segments start with the cached ones (the last may have grown)."""
    if len(fresh) < len(cached):
        return False
    last = len(cached) - 1
    for index, (old, new) in enumerate(zip(cached, fresh, strict=False)):
        if old.head != new.head:
            return False
        if new.lines != old.lines and (index < last or new.lines < old.lines):
            return False
    return True


def _window(run: _Run, start: datetime, max_lines: int, component: str, redactor: Redactor,
            until: datetime) -> tuple[_Run, LogRead] | None:
    """A fresh read from start with tail max_lines, cut from the run; None when the run
    cannot tell."""
    if _inside(start, run.disorder):
        return None  # lines before start sit among later ones: the cut would be ragged
    segments = run.segments
    # Without an inversion around start, every line stamped at or after it follows every
    # line stamped before it: the segments holding such lines are a suffix.
    index = bisect_left(segments, start, key=_high)
    kept = list(segments[index:])
    if kept and _first(kept[0]) < start:
        # An entry begun before start continues after it: a read from start begins with
        # its later lines, which parse as an entry of their own.
        later = [line for line in kept[0].raw if _line_time(line) >= start]
        kept[:1] = parse_segments(component, later, redactor, until)
    lines = sum(s.lines for s in kept)
    if lines >= max_lines:
        # Docker's tail: the run's last max_lines lines, all of them at or after start.
        kept, dropped = _last_lines(kept, max_lines, component, redactor, until)
        complete_from = max(start, run.complete_from, dropped + _MICROSECOND)
        truncated = True
        lines = max_lines
    elif run.lines >= max_lines or start >= run.complete_from:
        # Docker's tail reaches back past start within the run, or before the run, where
        # every line is older than start.
        complete_from = max(start, run.complete_from)
        truncated = False
    else:
        return None  # lines before the run may be at or after start
    disorder = tuple(d for d in run.disorder if d[0] >= start)
    kept_run = _Run(tuple(kept), lines, complete_from, disorder, run.newest, run.read_at,
                    run.new_lines)
    return kept_run, LogRead(_entries(kept), truncated)


def _last_lines(segments: Sequence[Segment], count: int, component: str, redactor: Redactor,
                until: datetime) -> tuple[list[Segment], datetime]:
    """The segments of the last count lines (a segment the cut falls in parsed again from
    the cut on), and the latest time among the lines left out."""
    taken = 0
    for index in range(len(segments) - 1, -1, -1):
        segment = segments[index]
        if taken + segment.lines < count:
            taken += segment.lines
            continue
        need = count - taken
        rest = list(segments[index + 1:])
        dropped = list(segments[:index])
        if need == segment.lines:
            kept = [segment, *rest]
        else:
            dropped.append(segment)
            kept = [*parse_segments(component, segment.raw[-need:], redactor, until), *rest]
        latest = max((_high(s) for s in dropped), default=datetime.min.replace(tzinfo=UTC))
        return kept, latest
    return list(segments), datetime.min.replace(tzinfo=UTC)


def _from_first_line_at(segments: Sequence[Segment], time: datetime, component: str,
                        redactor: Redactor, until: datetime) -> list[Segment]:
    """The segments from the first line stamped at or after time on, by position: a
    segment that line falls inside is parsed again from it."""
    for index, segment in enumerate(segments):
        if _high(segment) < time:
            continue
        if _first(segment) >= time:
            return list(segments[index:])
        at = next(n for n, line in enumerate(segment.raw) if _line_time(line) >= time)
        return [*parse_segments(component, segment.raw[at:], redactor, until),
                *segments[index + 1:]]
    return []


def _disorder(segments: Sequence[Segment]) -> list[_Interval] | None:
    """The since values that would not cut these lines into older, then newer ones: for
    lines stamped earlier than a line before them, from the earlier time (exclusive) to the
    later one (a segment stands for its lines by its earliest and latest time). None when
    a line has no time or the lines are out of order too often to keep."""
    intervals: list[_Interval] = []
    top: datetime | None = None
    for segment in segments:
        if not segment.timed:
            return None
        low, high = _low(segment), _high(segment)
        if top is not None and low < top:
            intervals.append((low, top))
        if not segment.ordered:
            intervals.append((low, high))
        top = high if top is None else max(top, high)
    return intervals if len(intervals) <= _MAX_DISORDER else None


def _inside(time: datetime, intervals: Sequence[_Interval]) -> bool:
    return any(low < time <= high for low, high in intervals)


def _entries(segments: Sequence[Segment]) -> list[LogEntry]:
    return [s.entry for s in segments if s.entry is not None]


_NEVER = datetime.min.replace(tzinfo=UTC)


# Runs hold only segments whose every line had Docker's time (checked when a run is made):
# these read those times without a None check at every use.
def _first(segment: Segment) -> datetime:
    return segment.first or _NEVER


def _low(segment: Segment) -> datetime:
    return segment.low or _NEVER


def _high(segment: Segment) -> datetime:
    return segment.high or _NEVER


def _line_time(line: str) -> datetime:
    time, _ = split_docker_timestamp(line)
    return time or _NEVER
