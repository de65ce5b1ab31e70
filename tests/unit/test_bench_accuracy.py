"""The fault campaign's judging and tables, and the catalogue's expectations, from plain data."""

from __future__ import annotations

import pytest

from bench.accuracy import (
    Flag,
    Given,
    Outcome,
    Summary,
    confusion,
    confusion_table,
    parse_args,
    table,
)
from exporter.issues import CATALOGUE
from fleet import faults
from fleet.model import COMPONENTS, Expectation, FleetError

STOPPED_AUTH = faults.expect("CONTAINER_NOT_RUNNING", "auth", "start_container")
DB_DOWN = faults.expect("CONTAINER_NOT_RUNNING|DB_UNREACHABLE", "db", "start_container")


def outcome(fault: str, expect: Expectation, given: Given, *, stale: tuple[str, ...] = (),
            healthy: bool = True, neighbours: tuple[Flag, ...] = (), error: str = "") -> Outcome:
    return Outcome(fault, "A", "single", expect, given, 1.5, stale, healthy, neighbours,
                   error=error)


RIGHT = outcome("stop:auth", STOPPED_AUTH, Given("CONTAINER_NOT_RUNNING", "auth",
                                                 "start_container"))
EITHER_CODE = outcome("stop:db", DB_DOWN, Given("DB_UNREACHABLE", "db", "start_container"))
WRONG_ROOT = outcome("pause:auth", STOPPED_AUTH, Given("COMPONENT_UNREACHABLE", "auth",
                                                       "restart_component"),
                     stale=("LOG_ERROR_SPIKE[auth]: 3 errors",))
WRONG_PLACE = outcome("stop:auth", STOPPED_AUTH, Given("CONTAINER_NOT_RUNNING", "kong",
                                                       "start_container"),
                      neighbours=(Flag("B", "GATEWAY_UNREACHABLE", "kong", "refused"),))
SLOW_NEIGHBOUR = outcome("stop:db", DB_DOWN, EITHER_CODE.given,
                         neighbours=(Flag("C", "ENDPOINT_SLOW", "rest", "took 2.1s"),))
FAILED = outcome("stop:auth", STOPPED_AUTH, Given(None, None, None), healthy=False,
                 error="break: timed out")


def test_judging_reads_code_component_and_repair() -> None:
    assert RIGHT.root_ok and RIGHT.repair_ok and RIGHT.fresh
    assert EITHER_CODE.root_ok and EITHER_CODE.repair_ok
    assert not WRONG_ROOT.root_ok and not WRONG_ROOT.repair_ok and not WRONG_ROOT.fresh
    # The right code on another component is the wrong root cause, its repair still right.
    assert not WRONG_PLACE.root_ok and WRONG_PLACE.repair_ok
    assert not FAILED.root_ok and not FAILED.repair_ok and not FAILED.fresh


def test_no_repair_is_right_only_when_a_root_cause_offers_none() -> None:
    weak = faults.expect("JWT_SECRET_WEAK", "auth", None)
    assert outcome("jwt-secret-short", weak, Given("JWT_SECRET_WEAK", "auth", None)).repair_ok
    assert not outcome("jwt-secret-short", weak, Given(None, None, None)).repair_ok
    assert not outcome("jwt-secret-short", weak,
                       Given("JWT_SECRET_WEAK", "auth", "regenerate_jwt_keys")).repair_ok


def test_unhealthy_heal_without_issues_is_stale() -> None:
    assert not outcome("stop:auth", STOPPED_AUTH, RIGHT.given, healthy=False).fresh


def test_confusion_counts_expected_against_given() -> None:
    outcomes = [RIGHT, RIGHT, EITHER_CODE, WRONG_ROOT, FAILED]
    assert confusion(outcomes) == {
        ("CONTAINER_NOT_RUNNING[auth]", "CONTAINER_NOT_RUNNING[auth]"): 2,
        ("CONTAINER_NOT_RUNNING/DB_UNREACHABLE[db]", "DB_UNREACHABLE[db]"): 1,
        ("CONTAINER_NOT_RUNNING[auth]", "COMPONENT_UNREACHABLE[auth]"): 1,
        ("CONTAINER_NOT_RUNNING[auth]", "error"): 1,
    }
    rows = confusion_table(outcomes)
    assert rows[2:] == [
        "| CONTAINER_NOT_RUNNING/DB_UNREACHABLE[db] | DB_UNREACHABLE[db] | 1 | right |",
        "| CONTAINER_NOT_RUNNING[auth] | COMPONENT_UNREACHABLE[auth] | 1 | wrong |",
        "| CONTAINER_NOT_RUNNING[auth] | CONTAINER_NOT_RUNNING[auth] | 2 | right |",
        "| CONTAINER_NOT_RUNNING[auth] | error | 1 | wrong |",
    ]


def test_summary_counts_each_goal() -> None:
    summary = Summary.of([RIGHT, EITHER_CODE, WRONG_ROOT, WRONG_PLACE, SLOW_NEIGHBOUR, FAILED])
    assert summary == Summary(faults=6, root_right=3, repair_right=4, stale=1,
                              neighbour_flagged=2, neighbour_slow_only=1, errors=1)
    assert summary.line() == (
        "6 faults: root cause right 3/6, repair right 4/6, stale after heal 1, healthy "
        "neighbour flagged 2 (1 of them only ENDPOINT_SLOW), runs that failed 1")


def test_table_marks_what_is_wrong() -> None:
    rows = table([RIGHT, WRONG_ROOT, WRONG_PLACE, FAILED])
    assert len(rows) == 6 and all(r.count("|") == rows[0].count("|") for r in rows)
    assert rows[2] == ("| stop:auth | A | CONTAINER_NOT_RUNNING[auth] | "
                       "CONTAINER_NOT_RUNNING[auth] ok | start_container | start_container ok "
                       "| 1.5 | healthy | clean |")
    assert "COMPONENT_UNREACHABLE[auth] **WRONG**" in rows[3]
    assert "STALE: LOG_ERROR_SPIKE[auth]: 3 errors" in rows[3]
    assert "FLAGGED: B GATEWAY_UNREACHABLE[kong]: refused" in rows[4]
    assert "error: break: timed out" in rows[5]


def test_every_fault_states_a_valid_expectation() -> None:
    specs = faults.specs()
    assert len(specs) >= 30
    for spec in specs:
        assert spec.expect is not None, spec.name
        assert spec.expect.codes <= set(CATALOGUE), spec.name
        if spec.expect.repair is not None:
            # The repair is one some code of the catalogue offers.
            assert spec.expect.repair in {s.repair for s in CATALOGUE.values()}, spec.name
    # Every component is stopped and paused.
    names = {s.name for s in specs}
    assert {f"{kind}:{c}" for kind in ("stop", "pause") for c in COMPONENTS} <= names


def test_expectation_refuses_what_cannot_be_right() -> None:
    with pytest.raises(FleetError):
        Expectation(frozenset(), "auth", None)
    with pytest.raises(FleetError):
        Expectation(frozenset({"CONTAINER_NOT_RUNNING"}), "gateway", None)


def test_arguments_are_checked_against_the_catalogue() -> None:
    args = parse_args(["--faults", "stop:auth,port-taken", "--pairs", "stop:db+port-taken"])
    assert args.faults == ["stop:auth", "port-taken"]
    assert args.pairs == [("stop:db", "port-taken")]
    assert parse_args(["--skip-singles", "--pairs", "none"]).faults == []
    for bad in (["--faults", "stop:nothing"], ["--pairs", "stop:auth"],
                ["--instances", "2"]):
        with pytest.raises(SystemExit):
            parse_args(bad)
