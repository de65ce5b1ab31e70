"""Detection with the shipped defaults, end to end, and what watching a healthy fleet costs.

Faults: brings up a fleet (3 instances; --instances 10), runs the exporter with the shipped
defaults (only its store and port set; --log-window also sets diagnostics.log_window_seconds,
since log lines of a healed fault count until they leave the window), the real Prometheus
and Alertmanager (Debian binaries) with the shipped prometheus.yml, rules and
alertmanager.yml (scrape targets and receivers pointed at this bench: every receiver
becomes a webhook receiver in this process; routes, timings and inhibitions stay as
shipped). Then, one fault class at a time, injects the fault into every instance at once
and measures for each instance:
  fault -> ultrabase_instance_healthy 0 on the exporter's /metrics (polled every 0.5 s),
  fault -> the first firing notification about the instance at the webhook receiver,
  heal  -> healthy 1 on /metrics, and heal -> the resolved notification of every alert that
           notified; and whether an alert about it notified firing again after the heal.
A fault starts when its injection starts and a heal when its undo starts (the fleet's own
break and heal, waiting for the symptom, run meanwhile). Before each class every instance
must be healthy on /metrics with no alert active (up to --settle-timeout).
Prints the median and maximum of each interval per class, against the goals.

Cost: brings up a healthy fleet of 10 (--cost-instances; healthchecks every 60 s,
--cost-health-interval, so that the background to subtract is small), waits until the
host's background is steady (two --idle-seconds windows in a row within 0.05 cores or 5%),
measures the idle background for --idle-seconds, starts the exporter, waits for its first
sweep, watches for --cost-minutes (10), stops the exporter and measures the idle background
again. Prints the host CPU that watching costs per instance per minute: the host's busy
time from /proc/stat during the window net of the mean of the two idle windows (their
drift printed as the figure's uncertainty), and its parts measured on their own, each net
of its own idle (the exporter, the fleet's containers, dockerd/containerd and the fleet's
shims). Then, the exporter stopped, it prices each kind of work watching does (a full
diagnostic, a quick-probe round, the synthetic user test) in bursts between idle windows
(bench/pricing.py, --price-repeat, --price-idle-seconds) and prints watching's cost built
from those prices and the window's counts: the figure the goal is judged on when the
background drifts more than the window's figure could show (--skip-price leaves it out).

Both phases run on an existing fleet instead with --root DIR (kept at the end).

Writes nothing into the tree. Run: python -m bench.detect [--instances 3 | --root DIR]
[--faults F,G] [--log-window S] [--skip-faults] [--cost-instances 10] [--cost-minutes 10]
[--idle-seconds 60] [--skip-price] [--skip-cost]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench.hostcpu import background_rate, container_cpu, engine_cpu, host_busy, process_cpu
from bench.pricing import Window, price_watching, print_prices
from exporter.config import load_config
from exporter.engine import PACED_SYNTHETIC_TRIGGERS
from exporter.service import terminate_on_sigterm
from fleet import engine as fleet_engine
from fleet.fleet import Fleet

ROOT = Path(__file__).resolve().parents[1]
CONTAINER_FAULTS = ("stop:auth", "kill:rest", "pause:kong", "auth-db-password", "port-taken")
OTHER_FAULTS = ("kong-key-mismatch", "service-key-wrong-secret", "volume-missing",
                "recreate:auth")
# Goals in seconds: fault -> /metrics, fault -> notified, heal -> resolved.
GOALS = {"container": (15.0, 90.0, 180.0), "other": (60.0, 180.0, 180.0)}
GOAL_CPU_PER_INSTANCE_MINUTE = 0.1
_POLL_SECONDS = 0.5
_AFTER_STOP_SECONDS = 10.0
# Ten instances come up in a few minutes on a loaded 2-core host.
UP_TIMEOUT = 900.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---- the processes --------------------------------------------------------------------------


class Webhook(ThreadingHTTPServer):
    """Alertmanager's webhook posts, each alert with the time it arrived."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[tuple[float, dict[str, Any]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                now = time.time()
                with outer.lock:
                    outer.received.extend((now, alert) for alert in body.get("alerts", []))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    def alerts(self, instance_id: str, since: float) -> list[tuple[float, dict[str, Any]]]:
        """Alerts about the instance received at or after since."""
        with self.lock:
            return [(t, a) for t, a in self.received
                    if t >= since and a["labels"].get("instance_id") == instance_id]


def fingerprint(alert: Mapping[str, Any]) -> str:
    """One alert's identity: its labels."""
    return json.dumps(alert["labels"], sort_keys=True)


def alert_names(fingerprints: Iterable[str]) -> tuple[str, ...]:
    """The alert names (with the component, when labelled) of these fingerprints, sorted."""
    names = set()
    for labels in map(json.loads, fingerprints):
        component = labels.get("component")
        names.add(labels.get("alertname", "?") + (f"[{component}]" if component else ""))
    return tuple(sorted(names))


@dataclass
class Stack:
    """The exporter, Prometheus and Alertmanager of one fleet, and the webhook."""

    work: Path
    exporter: str
    prometheus: str
    alertmanager: str
    webhook: Webhook
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def healthy(self) -> dict[str, float]:
        """ultrabase_instance_healthy per instance on the exporter's /metrics."""
        text = httpx.get(f"{self.exporter}/metrics", timeout=5).text
        return {s.labels["instance_id"]: s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples if s.name == "ultrabase_instance_healthy"}

    def active_alerts(self) -> set[str]:
        """Instance ids with an alert in Alertmanager (active, inhibited or silenced)."""
        alerts = httpx.get(f"{self.alertmanager}/api/v2/alerts", timeout=5).json()
        return {a["labels"].get("instance_id", "") for a in alerts}


def start(cmd: Sequence[str], log: Path, processes: list[subprocess.Popen[bytes]]) -> None:
    """Start a process logging to log; remembered for stop_all."""
    with log.open("ab") as out:
        processes.append(subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT,
                                          env={**os.environ, "PYTHONUNBUFFERED": "1"}))


def stop_all(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    """Terminate every process, then kill what does not end."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def wait_until(what: str, probe: Callable[[], Any], timeout: float,
               every: float = _POLL_SECONDS) -> Any:
    """probe()'s first true result; AssertionError after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = probe()
        except (httpx.HTTPError, ValueError, KeyError):
            found = None
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def exporter_config(fleet: Fleet, work: Path, port: int,
                    log_window: float | None = None) -> Path:
    """The fleet's doctor config with a store and a port of this bench: shipped defaults
    (and the log window, when one is given)."""
    raw = yaml.safe_load(fleet.config_path.read_text())
    raw["store"] = {"path": str(work / "store.sqlite3")}
    raw["exporter"] = {"host": "127.0.0.1", "port": port}
    if log_window is not None:
        raw.setdefault("diagnostics", {})["log_window_seconds"] = log_window
    path = work / "doctor.yaml"
    path.write_text(yaml.safe_dump(raw))
    path.chmod(0o600)
    return path


def start_exporter(fleet: Fleet, work: Path, processes: list[subprocess.Popen[bytes]],
                   log_window: float | None = None) -> str:
    """Start `ultrabase-doctor exporter` on the fleet; its URL once /healthz answers."""
    port = free_port()
    config = exporter_config(fleet, work, port, log_window)
    start([sys.executable, "-m", "exporter.cli", "exporter", "--config", str(config)],
          work / "exporter.log", processes)
    url = f"http://127.0.0.1:{port}"
    wait_until("the exporter", partial(ready, url, "/healthz"), 60)
    return url


def ready(url: str, path: str = "/-/ready") -> bool:
    """True when url + path answers 200."""
    return httpx.get(f"{url}{path}", timeout=2).status_code == 200


def prometheus_config(work: Path, exporter: str, alertmanager_port: int) -> Path:
    """The shipped prometheus.yml: the exporter's job pointed here, rules and intervals kept."""
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    config["rule_files"] = [str(ROOT / "prometheus" / f) for f in config["rule_files"]]
    config["alerting"]["alertmanagers"] = [
        {"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]
    [job] = [j for j in config["scrape_configs"] if j["job_name"] ==
             "ultrabase-doctor-exporter"]
    job["static_configs"] = [{"targets": [exporter.removeprefix("http://")]}]
    config["scrape_configs"] = [job]
    path = work / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def alertmanager_config(work: Path, webhook: Webhook) -> Path:
    """The shipped alertmanager.yml, every receiver a webhook to this bench."""
    config = yaml.safe_load((ROOT / "alertmanager" / "alertmanager.yml").read_text())
    config.pop("templates", None)
    url = f"http://127.0.0.1:{webhook.server_address[1]}/"
    config["receivers"] = [{"name": r["name"], "webhook_configs": [
        {"url": url, "send_resolved": True}]} for r in config["receivers"]]
    path = work / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def monitoring(fleet: Fleet, work: Path, log_window: float | None = None) -> Iterator[Stack]:
    """The exporter, Alertmanager and Prometheus over the fleet; all stopped on exit."""
    prometheus_bin = shutil.which("prometheus")
    alertmanager_bin = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if not (prometheus_bin and alertmanager_bin):
        raise SystemExit("prometheus and prometheus-alertmanager are needed (Debian packages)")
    webhook = Webhook()
    threading.Thread(target=webhook.serve_forever, daemon=True).start()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        exporter = start_exporter(fleet, work, processes, log_window)
        am_port, prom_port = free_port(), free_port()
        start([alertmanager_bin, f"--config.file={alertmanager_config(work, webhook)}",
               f"--storage.path={work / 'am-data'}",
               f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="],
              work / "alertmanager.log", processes)
        start([prometheus_bin, f"--config.file={prometheus_config(work, exporter, am_port)}",
               f"--storage.tsdb.path={work / 'prom-data'}",
               f"--web.listen-address=127.0.0.1:{prom_port}"], work / "prometheus.log",
              processes)
        stack = Stack(work, exporter, f"http://127.0.0.1:{prom_port}",
                      f"http://127.0.0.1:{am_port}", webhook, processes)
        for url in (stack.prometheus, stack.alertmanager):
            wait_until(url, partial(ready, url), 60)
        yield stack
    finally:
        stop_all(processes)
        webhook.shutdown()
        webhook.server_close()


# ---- faults ---------------------------------------------------------------------------------


def inject(fleet: Fleet, instance_id: str, fault: str) -> None:
    """The fleet's fault, or kill:<component> (docker kill: SIGKILL, no restart follows)."""
    if fault.startswith("kill:"):
        fleet_engine.container(fleet.instance(instance_id), fault.split(":", 1)[1]).kill()
        return
    fleet.break_(instance_id, fault)


def heal(fleet: Fleet, instance_id: str, fault: str) -> None:
    """Undo inject and wait until the instance is healthy again."""
    if fault.startswith("kill:"):
        fleet_engine.container(fleet.instance(instance_id), fault.split(":", 1)[1]).start()
        fleet.wait_healthy(instance_id)
        return
    fleet.heal(instance_id, fault)


def kind_of(fault: str) -> str:
    """"container" for faults of a container's state, else "other"."""
    return "container" if fault in CONTAINER_FAULTS or fault.split(":")[0] in (
        "stop", "kill", "pause") else "other"


@dataclass
class Sample:
    """One instance's intervals for one fault (None: not seen within the timeout)."""

    instance_id: str
    to_metrics: float | None = None
    to_notified: float | None = None
    heal_to_healthy: float | None = None
    heal_to_resolved: float | None = None
    error: str | None = None
    unresolved: tuple[str, ...] = ()  # alerts that notified and had not resolved at the end
    again: tuple[str, ...] = ()  # alerts that notified firing again after the heal


def run_class(stack: Stack, fleet: Fleet, fault: str, ids: Sequence[str],
              args: argparse.Namespace) -> list[Sample]:
    """Break every instance at once, measure, heal, measure."""
    samples = {i: Sample(i) for i in ids}
    firing: dict[str, set[str]] = {i: set() for i in ids}

    def broken(sample: Sample, since: float, healthy: Mapping[str, float], now: float) -> bool:
        if sample.to_metrics is None and healthy.get(sample.instance_id) == 0:
            sample.to_metrics = now - since
        for at, alert in stack.webhook.alerts(sample.instance_id, since):
            if alert["status"] == "firing":
                firing[sample.instance_id].add(fingerprint(alert))
                if sample.to_notified is None:
                    sample.to_notified = at - since
        return sample.to_metrics is not None and sample.to_notified is not None

    def healed(sample: Sample, since: float, healthy: Mapping[str, float], now: float) -> bool:
        if sample.heal_to_healthy is None and healthy.get(sample.instance_id) == 1:
            sample.heal_to_healthy = now - since
        resolved = {fingerprint(a): at for at, a in stack.webhook.alerts(sample.instance_id,
                                                                          since)
                    if a["status"] == "resolved"}
        wanted = firing[sample.instance_id]
        if sample.heal_to_resolved is None and set(resolved) >= wanted:
            sample.heal_to_resolved = max([0.0, *(resolved[f] - since for f in wanted)])
        sample.unresolved = alert_names(wanted - set(resolved))
        sample.again = alert_names(fingerprint(a) for at, a in stack.webhook.alerts(
            sample.instance_id, since) if a["status"] == "firing" and at > since + 1)
        return sample.heal_to_healthy is not None and sample.heal_to_resolved is not None

    _phase(stack, fleet, fault, samples, inject, broken, args.notify_timeout)
    _phase(stack, fleet, fault, samples, heal, healed, args.resolve_timeout)
    return list(samples.values())


Observe = Callable[[Sample, float, Mapping[str, float], float], bool]


def _phase(stack: Stack, fleet: Fleet, fault: str, samples: Mapping[str, Sample],
           act: Callable[[Fleet, str, str], None], observe: Observe, timeout: float) -> None:
    """act on every instance at once, then poll /metrics and the webhook until observe()
    holds for each (or the timeout passes); observe gets the time each act began."""
    began: dict[str, float] = {}

    def run(instance_id: str) -> None:
        began[instance_id] = time.time()
        try:
            act(fleet, instance_id, fault)
        except Exception as exc:  # the fleet's own error: recorded, the others go on
            samples[instance_id].error = f"{type(exc).__name__}: {exc}"[:200]

    with ThreadPoolExecutor(len(samples)) as pool:
        for instance_id in samples:
            pool.submit(run, instance_id)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                healthy = stack.healthy()
            except httpx.HTTPError:
                healthy = {}
            now = time.time()
            done = [bool(s.error) or (i in began and observe(s, began[i], healthy, now))
                    for i, s in samples.items()]
            if all(done):
                break
            time.sleep(_POLL_SECONDS)


def wait_clean(stack: Stack, ids: Sequence[str], timeout: float) -> list[str]:
    """The instances healthy on /metrics with no alert active, waiting up to timeout."""
    deadline = time.monotonic() + timeout
    clean: list[str] = []
    while time.monotonic() < deadline:
        try:
            healthy, active = stack.healthy(), stack.active_alerts()
        except httpx.HTTPError:
            time.sleep(1)
            continue
        clean = [i for i in ids if healthy.get(i) == 1 and i not in active]
        if len(clean) == len(ids):
            break
        time.sleep(1)
    return clean


def _stat(values: Sequence[float | None], timeout: float) -> tuple[str, str]:
    """Median and max as text; a missing value counts as over the timeout."""
    seen = [v for v in values if v is not None]
    if not values:
        return "-", "-"
    if len(seen) < len(values):
        return (f"{statistics.median(seen):.0f}" if len(seen) * 2 > len(values)
                else f">{timeout:.0f}"), f">{timeout:.0f}"
    return f"{statistics.median(seen):.1f}", f"{max(seen):.1f}"


def print_faults(rows: Sequence[tuple[str, list[Sample]]], args: argparse.Namespace) -> None:
    """The detection table, then the errors."""
    window = ("" if args.log_window is None
              else f"; diagnostics.log_window_seconds {args.log_window:g}")
    print(f"\nDetection on a fleet of {args.instances} (shipped defaults{window}), seconds, "
          "median / max over the instances:")
    print("| fault | kind | n | fault → /metrics | fault → notified | heal → healthy | "
          "heal → resolved | notified again | goals |")
    print("|---|---|---|---|---|---|---|---|---|")
    for fault, samples in rows:
        kind = kind_of(fault)
        cells = [_stat([s.to_metrics for s in samples], args.notify_timeout),
                 _stat([s.to_notified for s in samples], args.notify_timeout),
                 _stat([s.heal_to_healthy for s in samples], args.resolve_timeout),
                 _stat([s.heal_to_resolved for s in samples], args.resolve_timeout)]
        goals = "/".join(f"{g:g}" for g in GOALS[kind])
        again = sum(bool(s.again) for s in samples)
        print(f"| {fault} | {kind} | {len(samples)} | "
              + " | ".join(f"{m} / {x}" for m, x in cells) + f" | {again} | {goals} |")
    for fault, samples in rows:
        for s in samples:
            if s.error:
                print(f"  {fault} on {s.instance_id}: {s.error}")
            if s.unresolved:
                print(f"  {fault} on {s.instance_id}: not resolved: {', '.join(s.unresolved)}")
            if s.again:
                print(f"  {fault} on {s.instance_id}: notified again after the heal: "
                      + ", ".join(s.again))


def faults_phase(args: argparse.Namespace, work: Path) -> None:
    """Bring up the fleet and the monitoring, run every fault class, print the table."""
    if args.root:
        fleet = Fleet.open(Path(args.root))
        args.instances = len(fleet.ids)
    else:
        print(f"bringing up {args.instances} instances ...", file=sys.stderr)
        fleet = Fleet.up(work / "fleet", args.instances, timeout=UP_TIMEOUT,
                         health_interval=args.health_interval)
    rows: list[tuple[str, list[Sample]]] = []
    (work / "faults").mkdir()
    try:
        with monitoring(fleet, work / "faults", args.log_window) as stack:
            ids = list(fleet.ids)
            wait_until("every instance on /metrics",
                       lambda: len(stack.healthy()) == len(ids), 300, every=1)
            for fault in args.faults:
                clean = wait_clean(stack, ids, args.settle_timeout)
                if not clean:
                    print(f"{fault}: no instance is healthy and quiet; skipped",
                          file=sys.stderr)
                    continue
                print(f"{fault} on {len(clean)} instances (load average "
                      f"{os.getloadavg()[0]:.1f}) ...", file=sys.stderr)
                rows.append((fault, run_class(stack, fleet, fault, clean, args)))
                print_faults(rows[-1:], args)
    finally:
        print_faults(rows, args)
        if not args.root:
            fleet.down()


# ---- cost -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    """CPU-seconds so far: the host, the exporter, the fleet's containers, the engine."""

    at: float
    host: float
    tool: float
    containers: float
    engine: float

    @classmethod
    def take(cls, pid: int | None, container_ids: Sequence[str]) -> Reading:
        """Read every counter now."""
        return cls(time.monotonic(), host_busy(), process_cpu(pid) if pid else 0.0,
                   container_cpu(container_ids), engine_cpu(container_ids))

    def rates(self, later: Reading) -> dict[str, float]:
        """Cores each part kept busy between this reading and a later one."""
        span = later.at - self.at
        return {name: (getattr(later, name) - getattr(self, name)) / span
                for name in ("host", "tool", "containers", "engine")}


def fleet_container_ids(fleet: Fleet) -> list[str]:
    """The ids of every container of the fleet."""
    return [c.id for instance in fleet.instances
            for c in fleet_engine.containers(instance).values() if c.id is not None]


def settle(rate: Callable[[float], float], seconds: float, timeout: float,
           tolerance: float = 0.05) -> float:
    """Wait until two rate(seconds) windows in a row agree within tolerance (cores, or that
    share of the rate when larger); the last rate. Stops waiting after timeout."""
    deadline = time.monotonic() + timeout
    last = rate(seconds)
    while time.monotonic() < deadline:
        current = rate(seconds)
        if abs(current - last) <= max(tolerance, tolerance * last):
            return current
        last = current
    return last


def idle_window(container_ids: Sequence[str], seconds: float) -> dict[str, float]:
    """Cores the host and each part keep busy over seconds with the exporter not running."""
    before = Reading.take(None, container_ids)
    time.sleep(seconds)
    return before.rates(Reading.take(None, container_ids))


def runs_by_trigger(exporter: str) -> dict[str, float]:
    """ultrabase_diagnostic_runs_total summed by trigger."""
    text = httpx.get(f"{exporter}/metrics", timeout=5).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "ultrabase_diagnostic_runs_total":
                out[s.labels["trigger"]] = out.get(s.labels["trigger"], 0.0) + s.value
    return out


def cost_phase(args: argparse.Namespace, work: Path) -> None:
    """Watch a healthy fleet with the shipped defaults; print the CPU per instance-minute."""
    if args.root:
        fleet = Fleet.open(Path(args.root))
        n = len(fleet.ids)
    else:
        n = args.cost_instances
        print(f"bringing up {n} instances for the cost of watching ...", file=sys.stderr)
        fleet = Fleet.up(work / "cost-fleet", n, timeout=UP_TIMEOUT,
                         health_interval=args.cost_health_interval)
    minutes = args.cost_minutes
    processes: list[subprocess.Popen[bytes]] = []
    try:
        ids = fleet_container_ids(fleet)
        # A fleet that just came up keeps the host busy for minutes (first healthchecks,
        # the db's start-up work): the idle window waits until the background is steady.
        settled = settle(background_rate, args.idle_seconds, args.settle_timeout)
        print(f"background steady at {settled:.2f} cores; idle window ...", file=sys.stderr)
        idle_before = idle_window(ids, args.idle_seconds)
        (work / "cost").mkdir()
        exporter = start_exporter(fleet, work / "cost", processes)
        wait_until("the first sweep", lambda: runs_by_trigger(exporter).get(
            "scheduled", 0) >= n, 600, every=1)
        time.sleep(5)  # the sweep's last diagnostics are being rendered and logged
        runs_before = runs_by_trigger(exporter)
        before = Reading.take(processes[0].pid, ids)
        load = os.getloadavg()[0]
        print(f"watching for {minutes:g} minutes (load average {load:.1f}) ...",
              file=sys.stderr)
        time.sleep(minutes * 60)
        after = Reading.take(processes[0].pid, ids)
        runs_after = runs_by_trigger(exporter)
        stop_all(processes)
        processes.clear()
        time.sleep(_AFTER_STOP_SECONDS)  # the probes the exporter began have ended
        idle_after = idle_window(ids, args.idle_seconds)
        config = load_config(work / "cost" / "doctor.yaml")
        if not args.skip_price:
            print("pricing each kind of work in bursts ...", file=sys.stderr)
            prices = price_watching(config, fleet.ids, args.price_repeat,
                                    args.price_idle_seconds)
    finally:
        stop_all(processes)
        if not args.root:
            fleet.down()
    rates = before.rates(after)
    per = 60.0 / n  # cores -> CPU-seconds per instance-minute
    # The background is the mean of the windows before and after watching: a drift
    # between them is the measurement's uncertainty, printed below.
    idle = {k: (idle_before[k] + idle_after[k]) / 2 for k in idle_before}
    net = {k: rates[k] - idle.get(k, 0.0) for k in rates}
    runs = {t: runs_after.get(t, 0) - runs_before.get(t, 0) for t in runs_after}
    print(f"\nWatching a healthy fleet of {n} for {minutes:g} minutes (shipped defaults; "
          f"load average {load:.1f} → {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores), "
          "host CPU-seconds per instance-minute:")
    print("| host, net of idle | exporter | containers | dockerd, containerd, shims | goal |")
    print("|---|---|---|---|---|")
    print(f"| {net['host'] * per:.3f} | {net['tool'] * per:.3f} | "
          f"{net['containers'] * per:.3f} | {net['engine'] * per:.3f} | "
          f"{GOAL_CPU_PER_INSTANCE_MINUTE:g} |")
    drift = abs(idle_after["host"] - idle_before["host"]) * per
    parts = (net["tool"] + net["containers"] + net["engine"]) * per
    print(f"idle background {idle_before['host']:.2f} cores before watching, "
          f"{idle_after['host']:.2f} after (drift {drift:.3f} CPU-s per instance-minute); "
          f"parts add up to {parts:.3f} (the engine's share overlaps the containers' by the "
          "exec'd probes); diagnostics in the window by trigger: "
          + ", ".join(f"{t} {v:.0f}" for t, v in sorted(runs.items()) if v))
    print("idle of each part, cores, before -> after watching: " + ", ".join(
        f"{k} {idle_before[k]:.3f} -> {idle_after[k]:.3f}" for k in ("containers", "engine")))
    if args.skip_price:
        return
    span = after.at - before.at
    watch = config.watch
    paced = sum(v for t, v in runs.items() if t in PACED_SYNTHETIC_TRIGGERS)
    window = Window(
        n, span / 60, after.tool - before.tool, paced, sum(runs.values()) - paced,
        span / watch.probe_interval_seconds if watch.probe else 0.0,
        n * span / config.diagnostics.synthetic_user_interval_seconds
        if config.diagnostics.synthetic_user_interval_seconds else paced)
    print_prices(prices, window, GOAL_CPU_PER_INSTANCE_MINUTE)


def main() -> int:
    """Run the phases and print their tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=3, help="fleet size for the faults")
    parser.add_argument("--faults", default=",".join(CONTAINER_FAULTS + OTHER_FAULTS),
                        help="fault classes (fleet faults, or kill:<component>)")
    parser.add_argument("--root", help="run both phases on the existing fleet at this "
                        "root (python -m fleet up) instead of new ones; it is kept")
    parser.add_argument("--notify-timeout", type=float, default=300.0)
    parser.add_argument("--resolve-timeout", type=float, default=1200.0)
    parser.add_argument("--settle-timeout", type=float, default=1200.0,
                        help="how long to wait for instances to be healthy and quiet")
    parser.add_argument("--cost-instances", type=int, default=10)
    parser.add_argument("--cost-minutes", type=float, default=10.0)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--log-window", type=float, default=None,
                        help="the exporter's diagnostics.log_window_seconds (default: as "
                        "shipped); log lines of a healed fault count until they age out")
    parser.add_argument("--health-interval", default="10s",
                        help="the fleet's healthcheck interval (the template's is 5-10 s)")
    parser.add_argument("--cost-health-interval", default="60s",
                        help="the cost fleet's healthcheck interval: the healthchecks are "
                        "background, not watching, and at 10 s they keep a 2-core host "
                        "1.6 cores busy, whose noise alone is several times the goal")
    parser.add_argument("--price-repeat", type=int, default=3,
                        help="bursts per kind of work when pricing watching (median)")
    parser.add_argument("--price-idle-seconds", type=float, default=20.0,
                        help="the idle window around each burst")
    parser.add_argument("--skip-price", action="store_true",
                        help="only the window's figures, no pricing in bursts")
    parser.add_argument("--skip-faults", action="store_true")
    parser.add_argument("--keep-work", action="store_true",
                        help="keep the work dir (the exporter's log and store, Prometheus' "
                        "data) and print its path, to look into a result afterwards")
    parser.add_argument("--skip-cost", action="store_true")
    args = parser.parse_args()
    args.faults = [f for f in args.faults.split(",") if f]
    work = Path(tempfile.mkdtemp(prefix="ubd-detect-"))
    # SIGTERM ends the run like Ctrl-C: the processes and fleets it started are stopped.
    with terminate_on_sigterm():
        try:
            if not args.skip_cost:
                cost_phase(args, work)
            if not args.skip_faults:
                faults_phase(args, work)
        finally:
            if args.keep_work:
                print(f"work dir kept: {work}", file=sys.stderr)
            else:
                shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
