"""Console page times over a store of 50 instances with full history.

Fills a real actions.store.ActionStore in a temporary directory with N instances x H diagnostics
(8 checks, every tenth instance broken with a root cause), serves the real action app
(console included) over it with Docker answering from plain data (13 running containers per
instance) and a plain operation, signs in, and requests each page R times through Flask's
test client (no network: the time is the handler's, templates included). Prints a table of
p50, p95 and max wall time per page against the goal (every page under 200 ms), with
this process's CPU time per request (what the page costs, whatever else the host runs).
Writes nothing into the tree.
Run: python -m bench.console [--instances 50] [--history 100] [--requests 30]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from actions.app import create_app
from actions.backups import BackupStore
from actions.compose import ComposeRunner
from actions.context import ActionServices
from actions.operations.runner import OperationRunner
from actions.service import default_bodies
from actions.store import ActionStore
from bench.metrics import percentile
from bench.samples import diagnostic
from exporter.access import AccessControl, Principal
from exporter.config import parse_config
from exporter.engine import DiagnosticsEngine
from exporter.metrics.render import MetricsRenderer
from exporter.rootcause import find_root_cause
from exporter.store import InstanceInfo
from tests.unit.plaindocker import PlainDocker, containers_for

GOAL_MS = 200.0
SWEEP_SECONDS = 300
TOKEN = "bench-console-admin-token-0123456789"  # noqa: S105 - the bench's own, made up


def _ids(count: int) -> list[str]:
    return [f"inst-{i:03d}" for i in range(count)]


def fill(store: ActionStore, ids: Sequence[str], history: int, now: datetime) -> None:
    """history diagnostics per instance, a sweep apart, the newest just now."""
    for n, instance_id in enumerate(ids):
        template = diagnostic(instance_id, broken=n % 10 == 0)
        template = replace(template, root_cause=find_root_cause(list(template.issues)))
        for k in range(history):
            # Every tenth instance was unhealthy for its last 20 diagnostics.
            at = now - timedelta(seconds=SWEEP_SECONDS * (history - 1 - k))
            healthy_then = n % 10 != 0 or k < history - 20
            shown = template if not healthy_then else diagnostic(instance_id)
            store.save(replace(shown, timestamp=at))
    store.set_instances([InstanceInfo(i, f"Project {i}", f"owner{n % 7}")
                         for n, i in enumerate(ids)])


def build(root: Path, instances: int, history: int) -> tuple[Any, ActionServices, str]:
    """The action app over a filled store; its test client is what the bench times."""
    ids = _ids(instances)
    config = parse_config({
        "discovery": {"sources": ["static"], "static": [
            {"id": i, "name": f"Project {i}", "owner": f"owner{n % 7}",
             "compose_project": f"supabase-{i}"} for n, i in enumerate(ids)]},
        "store": {"path": str(root / "store.sqlite3"), "history_limit": history},
        "actions": {"backups_dir": str(root / "backups"), "rate_limit": "100000/minute"},
        "api": {"tokens": [{"name": "bench", "role": "admin", "instances": ["*"],
                            "token_sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}]},
    }, environ={})
    docker = PlainDocker([c for i in ids for c in containers_for(i)])
    store = ActionStore(config.store.path, history)
    fill(store, ids, history, datetime.now(UTC))
    engine = DiagnosticsEngine(config, docker, store, checks={})
    backups = BackupStore(config.actions.backups_dir)
    runner = OperationRunner(config, engine, store, docker, ComposeRunner(["false"]), backups,
                             None)
    svc = ActionServices(config=config, engine=engine, store=store, runner=runner,
                         backups=backups, renderer=MetricsRenderer(store, config=config),
                         bodies=default_bodies())
    app = create_app(svc, AccessControl(config.api))
    # One finished operation, for its page.
    operation = runner.run_inline("backup", ids[0], Principal("bench", "admin", None, "token"),
                                  {"reason": "bench"}, lambda ctx: {"done": True})
    return app, svc, operation.id


def sign_in(client: Any) -> None:
    """Sign the client in through the login form."""
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    response = client.post("/login", data={"csrf_token": token.group(1), "credential": TOKEN,
                                           "next": "/"})
    assert response.status_code == 303, response.status_code


def time_page(client: Any, path: str, requests: int) -> tuple[list[float], float]:
    """Wall milliseconds per request, and the mean CPU milliseconds of this process per
    request, after one untimed warm-up (template compilation)."""
    first = client.get(path)
    assert first.status_code == 200, (path, first.status_code,
                                      first.get_data(as_text=True)[:300])
    out = []
    cpu = time.process_time()
    for _ in range(requests):
        began = time.perf_counter()
        response = client.get(path)
        response.get_data()
        out.append((time.perf_counter() - began) * 1000)
    return out, (time.process_time() - cpu) * 1000 / requests


def main(argv: Sequence[str] | None = None) -> int:
    """Fill, sign in, time every page, print the table; exit 1 if a page misses the goal."""
    parser = argparse.ArgumentParser(prog="python -m bench.console", description=__doc__)
    parser.add_argument("--instances", type=int, default=50)
    parser.add_argument("--history", type=int, default=100)
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ubd-bench-console-") as tmp:
        began = time.perf_counter()
        app, svc, op_id = build(Path(tmp), args.instances, args.history)
        filled = time.perf_counter() - began
        client = app.test_client()
        sign_in(client)
        broken, healthy = "inst-000", "inst-001"
        pages = [
            ("fleet", "/"),
            ("fleet, unhealthy only", "/?status=unhealthy"),
            ("fleet cards (refresh)", "/?partial=cards"),
            ("instance (broken)", f"/instances/{broken}"),
            ("instance (healthy)", f"/instances/{healthy}"),
            ("history 7 d", f"/instances/{broken}/history?days=7"),
            ("history 30 d", f"/instances/{broken}/history?days=30"),
            ("repair plan", f"/instances/{broken}/repair"),
            ("restart", f"/instances/{broken}/restart"),
            ("backups", f"/instances/{broken}/backups"),
            ("audit", f"/instances/{broken}/audit"),
            ("operation", f"/operations/{op_id}"),
            ("diagnostic status", f"/instances/{broken}/diagnose/status"),
            ("runbook", "/runbook"),
        ]
        load = os.getloadavg()[0]
        print(f"console pages: {args.instances} instances x {args.history} diagnostics "
              f"(store filled in {filled:.1f}s), {args.requests} requests per page, "
              f"goal p95 < {GOAL_MS:.0f} ms; host load average {load:.1f} on "
              f"{os.cpu_count()} cores")
        print(f"{'page':<24} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'CPU ms':>8}  goal")
        missed = 0
        for name, path in pages:
            times, cpu = time_page(client, path, args.requests)
            ok = percentile(times, 0.95) < GOAL_MS
            missed += not ok
            print(f"{name:<24} {percentile(times, 0.5):>8.1f} {percentile(times, 0.95):>8.1f} "
                  f"{max(times):>8.1f} {cpu:>8.1f}  {'ok' if ok else 'MISSED'}")
        svc.runner.join(10)
        svc.engine.close()
        svc.store.close()
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
