"""LogCache: every read through it equals a fresh read of the same window, and reads less.

Docker is a fake here (taildocker.TailDocker, which answers like Docker's json-file
reader); the integration test tests/integration/test_log_cache_live.py runs the same
comparison against the real engine.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.discovery.model import Instance
from exporter.logs import LogAnalyzer, LogEntry, LogSummary
from exporter.logs.cache import LogCache
from exporter.redaction import Redactor
from tests.unit.logs.logdocker import NOW, container_id, make_instance
from tests.unit.logs.taildocker import Call, TailDocker, nanos

Result = tuple[list[LogEntry], LogSummary]
RedactorSource = Redactor | Callable[[Instance], Redactor]

PG_ERROR = "2026-11-30 11:59:00.000 UTC [88] postgres@postgres ERROR:  relation \"x\" missing"
PG_DETAIL = "2026-11-30 11:59:00.000 UTC [88] postgres@postgres DETAIL:  looked in public"
PG_HINT = "2026-11-30 11:59:00.000 UTC [88] postgres@postgres HINT:  create it first"
PG_STATEMENT = "2026-11-30 11:59:00.000 UTC [88] postgres@postgres STATEMENT:  select 1"
PG_LOG = "2026-11-30 11:59:00.000 UTC [1] LOG:  checkpoint complete"
KONG_ERROR = "2026/11/30 11:59:00 [error] 1#0: *5 connect() failed (111: Connection refused)"
KONG_ACCESS = '172.18.0.1 - - [30/Nov/2026:11:59:00 +0000] "GET /rest/v1/ HTTP/1.1" 200 12'
TRACE_HEAD = "level=error msg=\"handler crashed\""
TRACE_LINE = "    at handler (/app/server.js:10:5)"


def at(seconds: float) -> datetime:
    """NOW shifted by seconds (negative: before NOW)."""
    return NOW + timedelta(seconds=seconds)


class Twin:
    """One instance read through a shared cache and, for comparison, without one."""

    def __init__(self, docker: TailDocker, instance: Instance | None = None, *,
                 redactor: RedactorSource | None = None, cache: LogCache | None = None) -> None:
        self.docker = docker
        self.instance = instance or make_instance(("db", "kong", "storage"))
        self.redactor: RedactorSource = redactor if redactor is not None else Redactor()
        self.cache = cache if cache is not None else LogCache()

    def read(self, now: datetime, window: float = 900.0, max_lines: int = 1000) -> Result:
        """The cached read, after checking it equals a fresh read of the same window."""
        cached = LogAnalyzer(self.docker, self.redactor, cache=self.cache).get_structured_logs(
            self.instance, level="debug", since_seconds=window, max_lines=max_lines, now=now)
        plain = LogAnalyzer(self.docker, self.redactor).get_structured_logs(
            self.instance, level="debug", since_seconds=window, max_lines=max_lines, now=now)
        assert cached == plain
        return cached

    def calls_for(self, component: str, action: Callable[[], object]) -> list[Call]:
        """The cache's calls for the component during action."""
        before = len(self.docker.calls)
        action()
        cid = container_id(component)
        # The comparison read without a cache comes second and always asks since the
        # window's whole second with the full tail; only the calls before it are the cache's.
        calls = [c for c in self.docker.calls[before:] if c.container_id == cid]
        return calls[:-1]


def messages(result: Result, component: str) -> list[str]:
    return [e.message for e in reversed(result[0]) if e.component == component]


@pytest.fixture
def docker() -> TailDocker:
    return TailDocker()


# --- the first read --------------------------------------------------------------------------

def test_the_first_read_is_the_read_without_a_cache(docker: TailDocker) -> None:
    docker.write(container_id("db"), at(-100), PG_LOG, PG_ERROR, PG_DETAIL)
    docker.write(container_id("kong"), at(-50), KONG_ACCESS)
    twin = Twin(docker)
    calls = twin.calls_for("db", lambda: twin.read(NOW))
    # One call, as without a cache: since the window's start in whole seconds, full tail.
    assert [(c.since_ns, c.tail) for c in calls] == [(nanos(at(-900)), 1000)]
    assert twin.cache.stats().full_reads == 3


# --- incremental reads ---------------------------------------------------------------------

def test_a_later_read_asks_only_from_the_last_entry_on(docker: TailDocker) -> None:
    cid = container_id("db")
    docker.write(cid, at(-300), PG_LOG, PG_LOG)
    docker.write(cid, at(-200.123456), PG_ERROR)
    twin = Twin(docker)
    twin.read(NOW)
    docker.write(cid, at(30), PG_LOG, PG_LOG)
    calls = twin.calls_for("db", lambda: twin.read(at(60)))
    # From the last entry's time, inclusive and to the microsecond, with a small tail.
    assert len(calls) == 1
    assert calls[0].since_ns == nanos(at(-200.123456))
    assert calls[0].tail < 1000
    assert calls[0].returned == 3  # the last entry again, and the two new lines


def test_lines_arriving_between_reads(docker: TailDocker) -> None:
    twin = Twin(docker)
    for step in range(12):
        now = at(step * 45)
        docker.write(container_id("db"), now - timedelta(seconds=20), PG_LOG, PG_ERROR)
        docker.write(container_id("kong"), now - timedelta(seconds=10),
                     *[KONG_ACCESS] * step, KONG_ERROR)
        result = twin.read(now)
        assert messages(result, "kong").count("GET /rest/v1/ HTTP/1.1 200") == sum(range(step + 1))
    stats = twin.cache.stats()
    assert stats.full_reads == 3  # the first read of each container only
    assert stats.incremental_reads == 3 * 11


def test_more_new_lines_than_the_first_try_asks_for(docker: TailDocker) -> None:
    cid = container_id("kong")
    docker.write(cid, at(-100), KONG_ACCESS)
    twin = Twin(docker)
    twin.read(NOW)
    docker.write(cid, at(10), *[KONG_ACCESS] * 200)
    calls = twin.calls_for("kong", lambda: twin.read(at(20)))
    # The small tail did not reach back to the re-read line: asked again with the cap.
    assert [c.tail for c in calls] == [33, 1000]
    docker.write(cid, at(30), *[KONG_ACCESS] * 150)
    calls = twin.calls_for("kong", lambda: twin.read(at(40)))
    # Sized by the last read's new lines this time: one call is enough.
    assert len(calls) == 1


def test_a_folded_entry_split_across_two_reads(docker: TailDocker) -> None:
    cid = container_id("db")
    docker.write(cid, at(-60), PG_LOG)
    docker.write(cid, at(-30), PG_ERROR, PG_DETAIL)
    twin = Twin(docker)
    first = twin.read(NOW)
    assert first[0][0].fields == {"pid": 88, "user": "postgres", "database": "postgres",
                                  "detail": "looked in public"}
    # The rest of the entry arrives after the read: the cached entry grows.
    docker.write(cid, at(5), PG_HINT, PG_STATEMENT)
    second = twin.read(at(10))
    latest = second[0][0]
    assert latest.message == 'relation "x" missing'
    assert latest.fields["hint"] == "create it first"
    assert latest.fields["statement"] == "select 1"
    assert second[1].by_component["db"]["error"] == 1


def test_a_stack_trace_split_across_reads(docker: TailDocker) -> None:
    cid = container_id("storage")
    docker.write(cid, at(-30), TRACE_HEAD, TRACE_LINE)
    twin = Twin(docker)
    twin.read(NOW)
    docker.write(cid, at(3), TRACE_LINE, "", TRACE_LINE, "next line")
    result = twin.read(at(10))
    assert messages(result, "storage") == [
        "handler crashed\n" + "\n".join(["at handler (/app/server.js:10:5)"] * 3), "next line"]


# --- the window ----------------------------------------------------------------------------

def test_the_window_slides_past_old_entries(docker: TailDocker) -> None:
    cid = container_id("db")
    twin = Twin(docker)
    for minute in range(40):
        docker.write(cid, at(minute * 60 - 30), PG_LOG, PG_ERROR, PG_DETAIL)
        result = twin.read(at(minute * 60), window=600)
        assert result[1].by_component["db"]["error"] == min(minute + 1, 10)
    assert twin.cache.stats().entries <= 3 * 20  # older entries are not kept


def test_the_window_starts_inside_a_folded_entry(docker: TailDocker) -> None:
    cid = container_id("db")
    # The entry begins before the window's start; its DETAIL and HINT lines come after.
    docker.write(cid, at(-1000), PG_LOG)
    docker.write(cid, at(-880.5), PG_ERROR)
    docker.write(cid, at(-879.5), PG_DETAIL)
    docker.write(cid, at(-879.2), PG_HINT)
    docker.write(cid, at(-800), PG_LOG)
    twin = Twin(docker)
    twin.read(at(-100))
    result = twin.read(NOW - timedelta(seconds=-20.3))
    # A read from the window's start sees the DETAIL line first: an entry of its own.
    assert messages(result, "db") == ["looked in public", "checkpoint complete"]
    assert result[0][-1].fields == {"hint": "create it first"}


def test_a_window_that_starts_before_the_cached_run_reads_in_full(docker: TailDocker) -> None:
    cid = container_id("db")
    docker.write(cid, at(-3000), PG_ERROR)
    docker.write(cid, at(-100), PG_LOG)
    twin = Twin(docker)
    twin.read(NOW, window=900)
    calls = twin.calls_for("db", lambda: twin.read(at(10), window=3600))
    assert (calls[-1].since_ns, calls[-1].tail) == (nanos(at(10 - 3600)), 1000)


# --- the cap ---------------------------------------------------------------------------------

def test_the_cap_truncates_as_a_fresh_read_does(docker: TailDocker) -> None:
    cid = container_id("db")
    twin = Twin(docker)
    docker.write(cid, at(-100), PG_LOG, PG_LOG, PG_LOG)
    assert twin.read(NOW, max_lines=5)[1].truncated == ()
    docker.write(cid, at(5), PG_ERROR, PG_DETAIL, PG_HINT)
    result = twin.read(at(10), max_lines=5)
    assert result[1].truncated == ("db",)
    assert messages(result, "db") == ["checkpoint complete"] * 2 + ['relation "x" missing']


def test_the_cap_cuts_inside_a_folded_entry(docker: TailDocker) -> None:
    cid = container_id("db")
    twin = Twin(docker)
    docker.write(cid, at(-100), PG_LOG)
    twin.read(NOW, max_lines=4)
    for n, line in enumerate([PG_ERROR, PG_DETAIL, PG_HINT, PG_STATEMENT, PG_LOG]):
        docker.write(cid, at(5 + n / 1000), line)
    result = twin.read(at(10), max_lines=4)
    # The last four lines start at the DETAIL line: it leads an entry of its own, which the
    # HINT and STATEMENT lines after it extend.
    assert messages(result, "db") == ["looked in public", "checkpoint complete"]
    assert result[0][-1].fields == {"hint": "create it first", "statement": "select 1"}
    assert result[1].truncated == ("db",)
    docker.write(cid, at(15), PG_LOG)
    assert messages(twin.read(at(20), max_lines=4), "db") == [
        "create it first", "checkpoint complete", "checkpoint complete"]


def test_the_cap_cuts_inside_a_cached_folded_entry(docker: TailDocker) -> None:
    cid = container_id("db")
    twin = Twin(docker)
    for n, line in enumerate([PG_ERROR, PG_DETAIL, PG_HINT]):
        docker.write(cid, at(-100 + n / 1000), line)
    docker.write(cid, at(-50), PG_LOG)
    twin.read(NOW, max_lines=5)
    docker.write(cid, at(5), PG_LOG)
    docker.write(cid, at(6), PG_LOG)
    calls = twin.calls_for("db", lambda: twin.read(at(10), max_lines=5))
    assert [c.returned for c in calls] == [3]  # the last entry again and the new lines
    result = twin.read(at(10), max_lines=5)
    # The cached entry's first line fell out of the last five: DETAIL leads an entry now.
    assert messages(result, "db") == ["looked in public"] + ["checkpoint complete"] * 3
    assert result[0][-1].fields == {"hint": "create it first"}


def test_a_busy_container_stays_at_the_cap_and_reads_incrementally(docker: TailDocker) -> None:
    cid = container_id("kong")
    twin = Twin(docker)
    for step in range(10):
        docker.write(cid, at(step * 30 - 5), *[KONG_ACCESS, KONG_ERROR] * 30)
        result = twin.read(at(step * 30), max_lines=50)
        assert result[1].truncated == ("kong",)
    assert twin.cache.stats().incremental_reads >= 9


# --- what keys the cache --------------------------------------------------------------------

def test_entries_redacted_with_old_secrets_are_not_reused(docker: TailDocker) -> None:
    cid = container_id("storage")
    secrets = ["old-secret-value-1"]
    twin = Twin(docker, redactor=lambda _: Redactor(secrets))
    docker.write(cid, at(-60), "connecting with new-secret-value-2")
    assert "new-secret-value-2" in messages(twin.read(NOW), "storage")[0]
    secrets.append("new-secret-value-2")
    result = twin.read(at(10))
    assert all("new-secret-value-2" not in m for m in messages(result, "storage"))
    assert twin.cache.stats().full_reads == 3 * 2  # every container read afresh


def test_a_recreated_container_is_read_in_full_and_the_old_one_dropped(
        docker: TailDocker) -> None:
    twin = Twin(docker)
    docker.write(container_id("db"), at(-60), PG_LOG)
    twin.read(NOW)
    recreated = make_instance(("db", "kong", "storage"))
    db = recreated.components["db"]
    new_id = "recreated-db"
    assert db.container is not None
    components = {**recreated.components,
                  "db": type(db)(db.name, db.container_name,
                                 type(db.container)(**{**db.container.__dict__, "id": new_id}))}
    twin.instance = type(recreated)(**{**recreated.__dict__, "components": components})
    docker.write(new_id, at(30), PG_ERROR)
    calls_before = len(docker.calls)
    result = twin.read(at(40))
    assert messages(result, "db") == ['relation "x" missing']
    assert (docker.calls[calls_before].since_ns, docker.calls[calls_before].tail) == (
        nanos(at(40 - 900)), 1000)
    assert twin.cache.stats().containers == 4
    twin.read(at(2000))
    assert twin.cache.stats().containers == 3  # the old db not read within the window


def test_eviction_keeps_the_budget_and_an_evicted_container_reads_in_full(
        docker: TailDocker) -> None:
    cache = LogCache(max_entries=14)
    ids = ["first", "second", "third"]
    for cid in ids:
        docker.write(cid, at(-60), *[PG_LOG] * 6)

    def read(cid: str, now: datetime) -> list[LogEntry]:
        return cache.read(docker, cid, "db", Redactor(), since=now - timedelta(seconds=900),
                          until=now, max_lines=1000).entries

    expected = read("first", NOW)
    read("second", NOW)
    read("third", NOW)  # over budget: the least recently used one goes
    assert cache.stats().containers == 2
    assert cache.stats().entries <= 14
    docker.calls.clear()
    assert read("first", at(10)) == expected
    assert (docker.calls[0].since_ns, docker.calls[0].tail) == (nanos(at(10 - 900)), 1000)
    assert cache.stats().full_reads == 4
    # "first" came back and pushed out "second"; "third" is still there.
    assert read("third", at(10)) == expected
    assert docker.calls[-1].tail < 1000
    assert cache.stats().full_reads == 4


def test_a_zero_budget_keeps_nothing_and_still_answers(docker: TailDocker) -> None:
    docker.write(container_id("db"), at(-60), PG_LOG)
    twin = Twin(docker, cache=LogCache(max_entries=0))
    twin.read(NOW)
    twin.read(at(10))
    assert twin.cache.stats().entries == 0
    assert twin.cache.stats().full_reads == 2 + 2  # db both times; the empty ones once


# --- lines out of time order, and lines without a time ---------------------------------------

def test_stdout_and_stderr_stamped_out_of_write_order(docker: TailDocker) -> None:
    cid = container_id("kong")
    twin = Twin(docker)
    base = nanos(at(-200))
    for step in range(30):
        t = base + step * 10**9
        # The stderr line is stamped 26 µs before the stdout line written ahead of it.
        docker.write(cid, t, KONG_ACCESS)
        docker.write(cid, t - 26_000, KONG_ERROR)
    twin.read(NOW)
    for step in range(1, 8):
        t = nanos(at(step * 30)) - 10**9
        docker.write(cid, t, KONG_ACCESS)
        docker.write(cid, t - 26_000, KONG_ERROR)
        twin.read(at(step * 30), window=230)
    assert twin.cache.stats().incremental_reads >= 3 * 7 - 2


def test_a_window_start_among_out_of_order_lines(docker: TailDocker) -> None:
    cid = container_id("kong")
    twin = Twin(docker)
    docker.write(cid, at(-500), KONG_ACCESS)
    start = nanos(at(-100))  # the window's start for the read at NOW + 800 s
    docker.write(cid, start + 1000, KONG_ACCESS)
    docker.write(cid, start - 1000, KONG_ERROR)  # before start, written after a later line
    docker.write(cid, start + 5000, KONG_ACCESS)
    twin.read(NOW)
    result = twin.read(at(800))
    assert messages(result, "kong") == ["GET /rest/v1/ HTTP/1.1 200"] * 2


def test_a_line_stamped_before_the_last_read_but_written_after_it(docker: TailDocker) -> None:
    cid = container_id("kong")
    twin = Twin(docker)
    docker.write(cid, at(-0.1), KONG_ACCESS)
    twin.read(NOW)
    # Stamped 0.2 s before the read (and before the last line read), written after it.
    docker.write(cid, at(-0.2), KONG_ERROR)
    result = twin.read(at(30))
    assert messages(result, "kong") == ["connect() failed (111: Connection refused)",
                                        "GET /rest/v1/ HTTP/1.1 200"]


def test_lines_left_out_of_the_first_read_still_count_for_the_cap(docker: TailDocker) -> None:
    cid = container_id("kong")
    twin = Twin(docker)
    start = nanos(at(-900))  # the window's start of the first read
    docker.write(cid, start + 300_000_000, KONG_ACCESS)
    docker.write(cid, start - 200_000_000, KONG_ERROR)  # before start: Docker leaves it out
    docker.write(cid, start + 500_000_000, KONG_ACCESS)
    docker.write(cid, start + 2_000_000_000, KONG_ACCESS)
    twin.read(NOW, max_lines=4)
    docker.write(cid, at(0.1), KONG_ACCESS)
    # Same window start: the last four lines hold the left-out one, so only three are read.
    result = twin.read(at(0.2), max_lines=4)
    assert len(result[0]) == 3
    assert result[1].truncated == ()


def test_a_reread_never_starts_inside_an_inversion(docker: TailDocker) -> None:
    cid = container_id("kong")
    twin = Twin(docker)
    docker.write(cid, at(-10.0), KONG_ACCESS)
    docker.write(cid, at(-10.5), KONG_ERROR)  # stamped before the line written ahead of it
    docker.write(cid, at(-10.3), KONG_ACCESS)
    twin.read(NOW)
    docker.write(cid, at(5), KONG_ACCESS)
    calls = twin.calls_for("kong", lambda: twin.read(at(10)))
    # A read since the last line's time would also return the first one, ahead of it: the
    # cache reads since the earliest of the three instead, in one call.
    assert [(c.since_ns, c.returned) for c in calls] == [(nanos(at(-10.5)), 4)]


def test_lines_without_a_docker_time_are_never_cached(docker: TailDocker) -> None:
    cid = container_id("storage")
    docker.write(cid, at(-60), "progress 50%\rprogress 100%")
    twin = Twin(docker)
    twin.read(NOW)
    twin.read(at(10))
    assert twin.cache.stats().containers == 2


# --- concurrency ---------------------------------------------------------------------------

def test_instances_read_concurrently_share_one_cache(docker: TailDocker) -> None:
    cache = LogCache()
    twins = [Twin(docker, _instance(f"inst{n:04d}"), cache=cache) for n in range(6)]
    errors: list[BaseException] = []

    def sweep(twin: Twin, now: datetime) -> None:
        try:
            twin.read(now)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    for step in range(5):
        now = at(step * 20)
        for twin in twins:
            for name, comp in twin.instance.components.items():
                assert comp.container is not None
                docker.write(comp.container.id, now - timedelta(seconds=5),
                             PG_ERROR if name == "db" else KONG_ACCESS, PG_DETAIL)
        threads = [threading.Thread(target=sweep, args=(t, now)) for t in twins]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
    assert cache.stats().containers == 6 * 3
    assert cache.stats().incremental_reads == 6 * 3 * 4


def _instance(iid: str) -> Instance:
    base = make_instance(("db", "kong", "storage"))
    components = {}
    for name, comp in base.components.items():
        assert comp.container is not None
        container = type(comp.container)(**{**comp.container.__dict__, "id": f"{iid}-{name}"})
        components[name] = type(comp)(comp.name, comp.container_name, container)
    return type(base)(**{**base.__dict__, "id": iid, "components": components})


# --- any sequence of writes and reads ----------------------------------------------------------

_BODIES: dict[str, Sequence[Sequence[str]]] = {
    "db": ([PG_LOG], [PG_ERROR, PG_DETAIL], [PG_ERROR, PG_DETAIL, PG_HINT, PG_STATEMENT],
           [PG_DETAIL, PG_HINT], [""], [" continuing text"]),
    "kong": ([KONG_ACCESS], [KONG_ERROR], [KONG_ERROR, "stack traceback:", "\t[C]: in ?"]),
    "storage": ([TRACE_HEAD, TRACE_LINE, TRACE_LINE], [TRACE_LINE], ["plain line"], [""],
                ['{"level":"error","msg":"token=abcdefgh123 leaked"}']),
}
# A batch: component, kind of lines, how many times, ns from the clock before it, and how
# long before being written its lines were stamped (at most 0.9 s: Docker writes a line
# within a second of stamping it, the cache's one assumption).
_batch = st.tuples(st.sampled_from(sorted(_BODIES)), st.integers(0, 5), st.integers(1, 5),
                   st.sampled_from([1_000, 3_000_000, 200_000_000, 700_000_000]),
                   st.sampled_from([0, 0, 26_000, 300_000_000, 900_000_000]))
# A round: batches written, then the clock advances by seconds and the instance is read.
_round = st.tuples(st.lists(_batch, max_size=6),
                   st.sampled_from([0.05, 0.3, 1.2, 3.0, 10.0, 45.0, 400.0]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rounds=st.lists(_round, min_size=1, max_size=14),
       window=st.sampled_from([5.0, 60.0, 600.0]), max_lines=st.sampled_from([2, 5, 9, 1000]))
def test_any_sequence_of_writes_and_reads_matches_fresh_reads(
        rounds: list[tuple[list[tuple[str, int, int, int, int]], float]], window: float,
        max_lines: int) -> None:
    docker = TailDocker()
    twin = Twin(docker)
    clock = nanos(at(-0.4))
    for batches, advance in rounds:
        for component, kind, repeat, gap, jitter in batches:
            bodies = _BODIES[component][kind % len(_BODIES[component])]
            for _ in range(repeat):
                clock += gap
                docker.write(container_id(component), clock - jitter, *bodies)
        clock += int(advance * 10**9)
        twin.read(_at_ns(clock), window=window, max_lines=max_lines)


def _at_ns(ns: int) -> datetime:
    return NOW + timedelta(microseconds=(ns - nanos(NOW)) // 1000)


def test_the_secrets_digest_names_the_set_and_shows_none_of_it() -> None:
    one = Redactor(["first-secret-value", "second-secret-value"])
    assert one.digest() == Redactor(["second-secret-value", "first-secret-value"]).digest()
    assert one.digest() == one.extend(["tiny"[:2]]).digest()  # too short to be redacted
    assert one.digest() != one.extend(["third-secret-value"]).digest()
    assert one.digest() != Redactor(["first-secret-value"]).digest()
    assert "secret" not in one.digest()
