"""Waiting for the critical path to come clean after an operation started containers.

A container without a healthcheck (rest, kong, meta) counts as up once it runs, but the
service inside answers a moment later: one quick_health right after the start would blame
an operation that worked. So quick_health is repeated until it shows nothing new, or the
deadline passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from actions.operations.runner import OperationContext
from exporter.engine import QuickHealth
from exporter.issues import Issue

IssueKey = tuple[str, str | None]
RETRY_SECONDS = 2.0


def issue_key(issue: Issue) -> IssueKey:
    """What makes two quick_health issues the same finding."""
    return issue.code, issue.component


def settle_quick_health(ctx: OperationContext, deadline: float,
                        baseline: frozenset[IssueKey] = frozenset(), *,
                        sleep: Callable[[float], None] = time.sleep,
                        ) -> tuple[QuickHealth, list[Issue], int]:
    """quick_health until it shows no critical issue beyond baseline, or until deadline.

    Returns the last run, its issues not in baseline (empty when it settled) and the
    number of runs it took.
    """
    runs = 0
    while True:
        health = ctx.engine.quick_health(ctx.instance.id)
        runs += 1
        new = [i for i in health.issues if issue_key(i) not in baseline]
        remaining = deadline - time.monotonic()
        if not new or remaining <= 0:
            return health, new, runs
        sleep(min(RETRY_SECONDS, remaining))
