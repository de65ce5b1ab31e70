"""Bounded probes shared by the checks: in-network HTTP/TCP probes by exec, host TCP connects.

The in-network probes run one constant shell script per exec; every variable value (names,
URLs, hosts, ports, the wait) reaches it as a positional argument, never as shell text.
"""

from __future__ import annotations

import errno
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from exporter.discovery.model import Component
from exporter.dockerhost import DockerHost, ExecResult
from exporter.errors import DockerUnavailableError

T = TypeVar("T")

# Hostnames and probe names accepted as arguments; anything else is not probed.
_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_DIGITS = re.compile(r"[0-9]{1,5}")

# Probes every "name url" pair in parallel (each in a background subshell), so a hanging
# target costs one wait, not one per target. Prints "@@ name code rc t0 t1 why" per target:
# code is the last HTTP status seen (or -), t0/t1 come from /proc/uptime, why classifies a
# failure. wget -S prints the status line for busybox and GNU wget alike. The images it
# runs in (kong, auth) have busybox only, whose `timeout` applet bounds each request; wget
# -T is used only without `timeout` (Alpine's busybox has it, Debian's static build
# crashes on it, and a crash counts as an unusable tool rather than the target as down).
# GNU wget would retry a timeout 20 times, hence -t 1 when it is GNU (busybox rejects
# --version). A name that failed to resolve quickly is tried once more a second later:
# Docker's embedded DNS drops the odd query on a loaded host, and one miss is not an outage.
HTTP_PROBE_SCRIPT = r"""
set -f
w=$1; shift
to=
if timeout 1 true >/dev/null 2>&1; then to="timeout $((w + 1))"; fi
tool=
if command -v wget >/dev/null 2>&1; then tool=wget
elif command -v curl >/dev/null 2>&1; then tool=curl
fi
wopt=
if [ "$tool" = wget ]; then
  if wget --version >/dev/null 2>&1; then wopt="-t 1 -T $w"
  elif [ -z "$to" ]; then wopt="-T $w"
  fi
fi
while [ "$#" -ge 2 ]; do
  (
   try=1
   while :; do
    { read -r t0 _ < /proc/uptime; } 2>/dev/null || t0=-
    if [ "$tool" = wget ]; then
      out=$($to wget $wopt -S -O /dev/null "$2" 2>&1); rc=$?
    elif [ "$tool" = curl ]; then
      out=$($to curl -sS -o /dev/null -w 'HTTP/1.1 %{http_code}\n' -m "$w" "$2" 2>&1); rc=$?
    else
      out=; rc=127
    fi
    { read -r t1 _ < /proc/uptime; } 2>/dev/null || t1=-
    code=-; prev=
    for word in $out; do
      case $prev in HTTP/*) case $word in [1-5][0-9][0-9]) code=$word;; esac;; esac
      prev=$word
    done
    why=-
    if [ "$code" = - ]; then
      case $out in
        *refused*) why=refused;;
        *"bad address"*|*resolve*|*"not known"*|*"name resolution"*) why=dns;;
        *"timed out"*|*"Timed out"*|*timeout*) why=timeout;;
        *) why=error;;
      esac
      case $rc in 124|137|143) why=timeout;; 126|127|139) why=notool;; esac
    fi
    if [ "$why" = dns ] && [ "$try" = 1 ] && [ "$t0" != - ] && [ "$t1" != - ] && \
       [ $(( ${t1%.*} - ${t0%.*} )) -le 1 ]; then
      try=2; sleep 1; continue
    fi
    break
   done
    echo "@@ $1 $code $rc $t0 $t1 $why"
  ) 2>/dev/null &
  shift 2
done
wait
"""

# One TCP reachability test of host:port: pg_isready when present (it speaks the Postgres
# protocol), else nc; prints "@@ tool rc" or "@@ none". The auth image has busybox only.
# nc gets an empty stdin instead of -z, which Alpine's busybox has (NC_110_COMPAT) but
# Debian's does not: both shut their side down at stdin's EOF (nc.c, nc_bloaty.c), so it
# connects, sends nothing and ends when the server hangs up. PostgreSQL logs nothing for a
# connection that sends no byte (ProcessStartupPacket), no more than for pg_isready.
TCP_PROBE_SCRIPT = r"""
h=$1; p=$2; w=$3
to=
if timeout 1 true >/dev/null 2>&1; then to="timeout $((w + 1))"; fi
if command -v pg_isready >/dev/null 2>&1; then
  out=$($to pg_isready -h "$h" -p "$p" -t "$w" 2>&1); rc=$?
  echo "@@ pg_isready $rc"
elif command -v nc >/dev/null 2>&1; then
  out=$($to nc -w "$w" "$h" "$p" </dev/null 2>&1); rc=$?
  case $out in
    *sage*|*nrecognized*|*"invalid option"*|*"illegal option"*) echo "@@ none";;
    *) echo "@@ nc $rc";;
  esac
else
  echo "@@ none"
fi
printf '%s\n' "$out"
"""


# Exit codes of a command that `timeout` ended (TERM, KILL, or its own 124).
_KILLED = frozenset({124, 137, 143})


@dataclass(frozen=True)
class HttpTarget:
    """One HTTP URL to probe from inside the compose network."""

    name: str
    url: str


@dataclass(frozen=True)
class HttpOutcome:
    """What one in-network HTTP probe saw."""

    name: str
    url: str
    http_status: int | None
    latency_seconds: float | None
    error: str | None  # refused, dns, timeout, error, notool, no result

    @property
    def answered(self) -> bool:
        """True when the target answered HTTP at all."""
        return self.http_status is not None


@dataclass(frozen=True)
class HttpProbeRun:
    """All outcomes of one exec, or why the exec told nothing."""

    ran_in: str  # the component whose container ran the probe
    outcomes: Mapping[str, HttpOutcome]
    error: str | None = None

    @property
    def usable(self) -> bool:
        """True when the probe ran and had a tool to probe with."""
        return self.error is None


@dataclass(frozen=True)
class TcpOutcome:
    """One in-network TCP reachability test: reachable None means it could not be tested."""

    reachable: bool | None
    tool: str | None
    detail: str


def probe_wait_seconds(timeout: float) -> int:
    """Whole seconds each in-network request may take, leaving headroom inside timeout."""
    # The exec as a whole must end before the Docker client's read timeout.
    return max(1, int(timeout * 0.6))


def valid_host(value: str | None) -> bool:
    """True for a plain DNS name or container name."""
    return bool(value) and _HOST.match(value or "") is not None


def service_host(component: Component) -> str:
    """The name a component answers to inside the compose network."""
    container = component.container
    service = container.compose_service if container else None
    return service if service and valid_host(service) else component.name


def run_probe(docker: DockerHost, container_id: str, argv: list[str]) -> ExecResult:
    """Exec a probe script; once more if its output is lost (raises DockerUnavailableError).

    The engine at times returns a short exec's output empty although the process ran and
    exited 0 (moby#27289; seen here 1 in 200 execs on a loaded host). Every probe script
    prints an "@@" line, so an output without one is run again: a second loss in a row is
    reported as the probe printing nothing.
    """
    result = docker.exec(container_id, argv)
    if _printed(result.output):
        return result
    return docker.exec(container_id, argv)


def _printed(output: str) -> bool:
    return any(line.startswith("@@ ") for line in output.splitlines())


def probe_http(docker: DockerHost, container_id: str, ran_in: str,
               targets: Sequence[HttpTarget], timeout: float) -> HttpProbeRun:
    """Probe every target in one exec inside container_id; never raises."""
    wanted = [t for t in targets if _NAME.match(t.name) and _safe_url(t.url)]
    if not wanted:
        return HttpProbeRun(ran_in, {}, "nothing to probe")
    argv = ["sh", "-c", HTTP_PROBE_SCRIPT, "probe", str(probe_wait_seconds(timeout))]
    for target in wanted:
        argv += [target.name, target.url]
    try:
        result = run_probe(docker, container_id, argv)
    except DockerUnavailableError as exc:
        return HttpProbeRun(ran_in, {}, f"exec failed: {exc}")
    outcomes = parse_http_probe(result.output, wanted)
    if not _printed(result.output):
        return HttpProbeRun(ran_in, outcomes, "the probe printed nothing (no sh in the "
                                              f"container?), exit code {result.exit_code}")
    if outcomes and all(o.error == "notool" for o in outcomes.values()):
        return HttpProbeRun(ran_in, outcomes, "neither wget nor curl in the container")
    return HttpProbeRun(ran_in, outcomes)


def parse_http_probe(output: str, targets: Sequence[HttpTarget]) -> dict[str, HttpOutcome]:
    """Outcomes by target name from the probe script's output."""
    urls = {t.name: t.url for t in targets}
    seen: dict[str, HttpOutcome] = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) != 7 or parts[0] != "@@" or parts[1] not in urls:
            continue
        _, name, code, _rc, t0, t1, why = parts
        status = int(code) if code.isdigit() else None
        seen[name] = HttpOutcome(name, urls[name], status, _latency(t0, t1),
                                 None if status is not None else why)
    for name, url in urls.items():
        seen.setdefault(name, HttpOutcome(name, url, None, None, "no result"))
    return seen


def probe_tcp(docker: DockerHost, container_id: str, host: str, port: int,
              timeout: float) -> TcpOutcome:
    """Whether container_id reaches host:port (pg_isready or nc); never raises."""
    if not valid_host(host) or not 0 < port < 65536:
        return TcpOutcome(None, None, "invalid target")
    argv = ["sh", "-c", TCP_PROBE_SCRIPT, "probe", host, str(port),
            str(probe_wait_seconds(timeout))]
    try:
        result = run_probe(docker, container_id, argv)
    except DockerUnavailableError as exc:
        return TcpOutcome(None, None, f"exec failed: {exc}")
    lines = result.output.splitlines()
    head = next((line.split() for line in lines if line.startswith("@@ ")), None)
    detail = " ".join(line for line in lines if not line.startswith("@@ ")).strip()[:300]
    if head is None:
        return TcpOutcome(None, None, "the probe printed nothing (no sh in the container?), "
                                      f"exit code {result.exit_code}")
    if len(head) < 2 or head[1] == "none":
        return TcpOutcome(None, None, "no pg_isready or usable nc in the container")
    tool = head[1]
    rc = int(head[2]) if len(head) > 2 and head[2].isdigit() else -1
    if tool == "pg_isready":
        # 0 accepting, 1 rejecting (up but e.g. starting), 2 no response, 3 no attempt;
        # anything else (a broken wrapper, killed by timeout) says nothing about the link.
        if rc in (0, 1) and ("accepting" in detail or "rejecting" in detail):
            return TcpOutcome(True, tool, detail)
        if rc == 2 and "no response" in detail:
            return TcpOutcome(False, tool, detail)
        return TcpOutcome(None, tool, detail or f"pg_isready exit code {rc}")
    if rc in _KILLED:
        # nc's own connect timeout (-w) ends it before `timeout` does: killed means it was
        # connected and the server kept the connection open without a word (a hung server).
        return TcpOutcome(True, tool, "connected; the server did not close the connection")
    return TcpOutcome(rc == 0, tool, detail)


def probe_argv_valid(argv: Sequence[str]) -> bool:
    """True when argv is one probe_http or probe_tcp builds (the engine proxy runs no other)."""
    if len(argv) < 5 or list(argv[:2]) != ["sh", "-c"] or argv[3] != "probe":
        return False
    script, args = argv[2], list(argv[4:])
    if script == HTTP_PROBE_SCRIPT:
        pairs = args[1:]
        return (_DIGITS.fullmatch(args[0]) is not None and bool(pairs) and len(pairs) % 2 == 0
                and all(_NAME.fullmatch(name) and _safe_url(url) and "\n" not in url
                        for name, url in zip(pairs[::2], pairs[1::2], strict=True)))
    if script == TCP_PROBE_SCRIPT and len(args) == 3:
        host, port, wait = args
        return (_HOST.fullmatch(host) is not None and _DIGITS.fullmatch(port) is not None
                and 0 < int(port) < 65536 and _DIGITS.fullmatch(wait) is not None)
    return False


def _safe_url(url: str) -> bool:
    # Only http URLs built from constants and validated hosts; never an option-like word.
    match = re.match(r"^http://([A-Za-z0-9][A-Za-z0-9_.-]*):(\d{1,5})(/[A-Za-z0-9_./-]*)$", url)
    return match is not None and valid_host(match.group(1))


def _latency(t0: str, t1: str) -> float | None:
    try:
        return round(max(0.0, float(t1) - float(t0)), 3)
    except ValueError:
        return None


# ---- host side -------------------------------------------------------------------------

@dataclass(frozen=True)
class Connect:
    """A TCP connect from the host: ok True/False, or None when the family is unavailable."""

    host: str
    port: int
    ok: bool | None
    error: str | None = None


_NO_FAMILY = {errno.EADDRNOTAVAIL, errno.ENETUNREACH, errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT}


def tcp_connect(host: str, port: int, timeout: float) -> Connect:
    """Try one TCP connect to a loopback address; never raises."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError:
        return Connect(host, port, None, "address family unavailable")
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))
        return Connect(host, port, True)
    except TimeoutError:
        return Connect(host, port, False, "timeout")
    except ConnectionRefusedError:
        return Connect(host, port, False, "refused")
    except OSError as exc:
        if exc.errno in _NO_FAMILY:
            return Connect(host, port, None, "address family unavailable")
        return Connect(host, port, False, exc.strerror or type(exc).__name__)
    finally:
        sock.close()


# ---- bounding blocking calls -----------------------------------------------------------

class _Slot(Generic[T]):
    """The result or exception of one bounded call."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: T | None = None
        self.error: BaseException | None = None


def run_bounded(calls: Sequence[Callable[[], T]], timeout: float
                ) -> list[T | BaseException]:
    """Run calls concurrently; each result, its exception, or TimeoutError after timeout.

    Daemon threads: a call stuck in the kernel (a hung mount) is abandoned, never joined.
    """
    slots: list[_Slot[T]] = []
    for call in calls:
        slot: _Slot[T] = _Slot()

        def work(call: Callable[[], T] = call, slot: _Slot[T] = slot) -> None:
            try:
                slot.value = call()
            except BaseException as exc:  # handed back to the caller as a value
                slot.error = exc
            finally:
                slot.done.set()

        threading.Thread(target=work, name="ubd-bounded", daemon=True).start()
        slots.append(slot)
    deadline = time.monotonic() + timeout
    out: list[T | BaseException] = []
    for slot in slots:
        if not slot.done.wait(max(0.0, deadline - time.monotonic())):
            out.append(TimeoutError(f"did not finish within {timeout:g}s"))
        elif slot.error is not None:
            out.append(slot.error)
        else:
            out.append(slot.value)  # type: ignore[arg-type]
    return out


def call_bounded(call: Callable[[], T], timeout: float) -> T:
    """call()'s result; its exception, or TimeoutError after timeout seconds."""
    (result,) = run_bounded([call], timeout)
    if isinstance(result, BaseException):
        raise result
    return result
