"""settle_quick_health: quick_health repeated until the critical path is clean, or a deadline."""

from __future__ import annotations

import time
from types import SimpleNamespace

from actions.operations.health import issue_key, settle_quick_health
from exporter.engine import QuickHealth
from exporter.issues import Issue, make_issue

REST_502 = make_issue("COMPONENT_UNHEALTHY", check="api_endpoints", component="rest",
                      message="rest answers 502 through the gateway")
AUTH_DOWN = make_issue("CONTAINER_NOT_RUNNING", check="container_status", component="auth",
                       message="supabase-auth is exited")


class ScriptedEngine:
    """quick_health answers the issue lists given, then the last one for ever."""

    def __init__(self, *answers: tuple[Issue, ...]) -> None:
        self.answers = list(answers)
        self.calls = 0

    def quick_health(self, instance_id: str) -> QuickHealth:
        self.calls += 1
        issues = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return QuickHealth(instance_id, not issues, issues, 0.01)


def ctx_with(engine: ScriptedEngine) -> SimpleNamespace:
    return SimpleNamespace(engine=engine, instance=SimpleNamespace(id="aaaa0001"))


def test_a_component_that_answers_late_settles() -> None:
    engine = ScriptedEngine((REST_502,), (REST_502,), ())
    slept: list[float] = []
    health, new, runs = settle_quick_health(ctx_with(engine), time.monotonic() + 30,
                                            sleep=slept.append)
    assert health.healthy and new == [] and runs == 3 == engine.calls
    assert slept == [2.0, 2.0]


def test_a_lasting_fault_is_returned_once_the_deadline_passes() -> None:
    engine = ScriptedEngine((AUTH_DOWN,))
    started = time.monotonic()
    health, new, runs = settle_quick_health(ctx_with(engine), started + 0.3,
                                            sleep=time.sleep)
    assert not health.healthy and new == [AUTH_DOWN]
    assert runs >= 2 and 0.3 <= time.monotonic() - started < 2.0


def test_issues_already_there_before_do_not_hold_it_up() -> None:
    engine = ScriptedEngine((AUTH_DOWN,))
    health, new, runs = settle_quick_health(
        ctx_with(engine), time.monotonic() + 30, frozenset({issue_key(AUTH_DOWN)}),
        sleep=lambda _: None)
    assert not health.healthy and new == [] and runs == 1


def test_a_new_fault_beside_an_old_one_counts() -> None:
    engine = ScriptedEngine((AUTH_DOWN, REST_502))
    _, new, _ = settle_quick_health(ctx_with(engine), time.monotonic() - 1,
                                    frozenset({issue_key(AUTH_DOWN)}))
    assert new == [REST_502] and engine.calls == 1
