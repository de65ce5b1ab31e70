"""disk_usage: free space where the instance lives, its volume dirs, its container logs.

Everything here reads the host's filesystem; every read is bounded in time, and a volume
too big to walk within the budget is reported as a lower bound.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import NotRequired, Required, TypedDict

from exporter.checks.base import CheckContext, Family, Findings
from exporter.checks.probes import call_bounded, run_bounded
from exporter.discovery.lifecycle import never_started
from exporter.issues import Issue, make_issue

DOCKER_ROOT = Path("/var/lib/docker")
# Volume directories the manager leaves to Docker's first `up` (generate.bash makes only
# functions/, logs/, db/init and api/).
DOCKER_CREATES = frozenset({"db_data", "storage"})
# Walking stops after this many entries; the size is then a lower bound.
MAX_ENTRIES = 200_000
# Which component a named volume dir belongs to (names from discovery).
VOLUME_COMPONENTS: Mapping[str, str] = {"db_data": "db", "storage": "storage",
                                        "functions": "functions"}
_CONTAINER_ID = re.compile(r"^[0-9a-f]{64}$")


class FilesystemState(TypedDict, total=False):
    """The filesystem holding the instance's files: its space, or why it was not read."""

    path: Required[str]
    avail_bytes: int
    size_bytes: int
    free_percent: float
    error: str


class VolumeState(TypedDict):
    """One volume dir as details show it."""

    path: str
    exists: bool | None  # None: could not tell
    size_bytes: int | None
    complete: bool  # False: size_bytes is a lower bound
    entries: int
    error: NotRequired[str]
    note: NotRequired[str]  # why a missing dir is no issue


class DiskUsageDetails(TypedDict):
    """disk_usage's details."""

    filesystem: FilesystemState | None  # None when no instance path is known
    volumes: dict[str, VolumeState]
    logs_bytes: dict[str, int]  # component -> size of its container's json-file log
    logs_skipped: NotRequired[str]


DISK_USAGE: Family[DiskUsageDetails] = Family("disk_usage")


@dataclass(frozen=True)
class FilesystemUsage:
    """Space on the filesystem holding a path."""

    path: str
    avail_bytes: int
    size_bytes: int

    @property
    def free_percent(self) -> float:
        """Available space as a percentage of the filesystem's size."""
        return 100.0 * self.avail_bytes / self.size_bytes if self.size_bytes else 100.0


@dataclass(frozen=True)
class VolumeUsage:
    """One volume dir: whether it exists and how much its files hold (apparent size)."""

    path: str
    exists: bool | None  # None: could not tell (permission, hung mount)
    size_bytes: int | None
    complete: bool  # False: size_bytes is a lower bound
    entries: int = 0
    error: str | None = None


class _Tally:
    """Running totals of one walk, readable even when the walk is abandoned."""

    def __init__(self) -> None:
        self.size = 0
        self.entries = 0
        self.unreadable = 0
        self.finished = False


class DiskUsageCheck:
    """Enough free space, every volume dir present, container logs not oversized."""

    name = DISK_USAGE.name

    def __init__(self, docker_root: Path = DOCKER_ROOT, max_entries: int = MAX_ENTRIES) -> None:
        self._docker_root = docker_root
        self._max_entries = max_entries

    def run(self, ctx: CheckContext) -> Findings:
        """Filesystem, volumes and logs; each part bounded by the timeout."""
        files = ctx.instance.files
        thresholds = ctx.config.thresholds
        issues: list[Issue] = []
        details: DiskUsageDetails = {"filesystem": None, "volumes": {}, "logs_bytes": {}}

        anchor = files.volumes_dir or (files.compose_file.parent if files.compose_file
                                       else next(iter(files.volume_dirs.values()), None))
        if anchor is None and not files.volume_dirs and not ctx.instance.runtime_known:
            return Findings(details=details, skipped="no instance files known")
        if anchor is not None:
            fs_issues, details["filesystem"] = self._filesystem(ctx, anchor)
            issues.extend(fs_issues)

        volumes = self._volumes(ctx, files.volume_dirs)
        # Docker creates the bind-mounted directories at the first start: before it, their
        # absence is no loss (exporter.lifecycle).
        first_start_pending = never_started(ctx.instance, ctx.now)
        for name, usage in volumes.items():
            volume: VolumeState = {
                "path": usage.path, "exists": usage.exists, "size_bytes": usage.size_bytes,
                "complete": usage.complete, "entries": usage.entries}
            details["volumes"][name] = volume
            if usage.error:
                volume["error"] = usage.error
            if usage.exists is False and first_start_pending and name in DOCKER_CREATES:
                volume["note"] = "not created yet: Docker creates it at the instance's first start"
            elif usage.exists is False:
                issues.append(make_issue(
                    "VOLUME_MISSING", check=self.name, component=VOLUME_COMPONENTS.get(name),
                    message=f"volume dir {name} is missing: {usage.path}",
                    evidence={"volume": name, "path": usage.path, "error": usage.error}))

        if ctx.instance.runtime_known:
            logs = self._log_sizes(ctx)
            details["logs_bytes"] = {name: size for name, (_, size) in logs.items()}
            limit = thresholds.logs_oversized_bytes
            for name, (path, size) in sorted(logs.items()):
                if size > limit:
                    issues.append(make_issue(
                        "LOGS_OVERSIZED", check=self.name, component=name,
                        message=f"{name}'s container log is {size} bytes "
                                f"(threshold {limit})",
                        evidence={"path": path, "bytes": size, "threshold_bytes": limit}))
        else:
            details["logs_skipped"] = "docker unreachable"
        return Findings(tuple(issues), details)

    # filesystem ----------------------------------------------------------------------

    def _filesystem(self, ctx: CheckContext, anchor: Path
                    ) -> tuple[list[Issue], FilesystemState]:
        try:
            usage = call_bounded(lambda: filesystem_usage(anchor), ctx.timeout)
        except (OSError, TimeoutError) as exc:
            return [], {"path": str(anchor), "error": _reason(exc)}
        free = round(usage.free_percent, 2)
        info: FilesystemState = {"path": usage.path, "avail_bytes": usage.avail_bytes,
                "size_bytes": usage.size_bytes, "free_percent": free}
        thresholds = ctx.config.thresholds
        if free < thresholds.disk_critical_free_percent:
            code, limit = "DISK_SPACE_CRITICAL", thresholds.disk_critical_free_percent
        elif free < thresholds.disk_low_free_percent:
            code, limit = "DISK_SPACE_LOW", thresholds.disk_low_free_percent
        else:
            return [], info
        return [make_issue(
            code, check=self.name,
            message=f"{free}% free on the filesystem holding {usage.path} "
                    f"(threshold {limit:g}%)",
            evidence={**info, "threshold_percent": limit})], info

    # volumes -------------------------------------------------------------------------

    def _volumes(self, ctx: CheckContext, dirs: Mapping[str, Path]) -> dict[str, VolumeUsage]:
        """Walk every volume dir at once, each within the same time budget."""
        names = list(dirs)
        deadline = time.monotonic() + ctx.timeout
        tallies = [_Tally() for _ in names]
        calls: list[Callable[[], VolumeUsage]] = [
            partial(volume_usage, dirs[n], tally, deadline, self._max_entries)
            for n, tally in zip(names, tallies, strict=True)
        ]
        results = run_bounded(calls, ctx.timeout + 0.5)
        out: dict[str, VolumeUsage] = {}
        for name, tally, result in zip(names, tallies, results, strict=True):
            if isinstance(result, VolumeUsage):
                out[name] = result
            else:
                # The walk hung in a system call: keep what it had counted so far.
                out[name] = VolumeUsage(str(dirs[name]), None if tally.entries == 0 else True,
                                        tally.size if tally.entries else None, False,
                                        tally.entries, _reason(result))
        return out

    # logs ----------------------------------------------------------------------------

    def _log_sizes(self, ctx: CheckContext) -> dict[str, tuple[str, int]]:
        """Size of each component's json-file log, where this process may stat it."""
        paths: dict[str, Path] = {}
        for name, component in ctx.instance.components.items():
            container = component.container
            if container is not None and _CONTAINER_ID.match(container.id):
                cid = container.id
                paths[name] = self._docker_root / "containers" / cid / f"{cid}-json.log"

        def stat_all() -> dict[str, tuple[str, int]]:
            sizes: dict[str, tuple[str, int]] = {}
            for name, path in paths.items():
                try:
                    sizes[name] = (str(path), path.stat().st_size)
                except OSError:
                    continue  # another log driver, or not readable: nothing to say
            return sizes

        try:
            return call_bounded(stat_all, ctx.timeout)
        except (OSError, TimeoutError):
            return {}


def filesystem_usage(path: Path) -> FilesystemUsage:
    """Free and total bytes of the filesystem holding path (or its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    return FilesystemUsage(str(probe), usage.free, usage.total)


def volume_usage(path: Path, tally: _Tally, deadline: float, max_entries: int) -> VolumeUsage:
    """Whether path exists and the apparent size of the files under it, bounded."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return VolumeUsage(str(path), False, None, True, error="not found")
    except OSError as exc:
        return VolumeUsage(str(path), None, None, False, error=_reason(exc))
    if not os.path.isdir(path):
        return VolumeUsage(str(path), False, st.st_size, True, error="not a directory")
    walk(path, tally, deadline, max_entries)
    complete = tally.finished and tally.unreadable == 0
    return VolumeUsage(str(path), True, tally.size, complete, tally.entries,
                       None if complete else _incomplete(tally, max_entries))


def walk(root: Path, tally: _Tally, deadline: float, max_entries: int) -> None:
    """Add up file sizes under root without following symlinks, until a limit is hit."""
    stack = [str(root)]
    while stack:
        if time.monotonic() > deadline or tally.entries >= max_entries:
            return
        current = stack.pop()
        try:
            scanner = os.scandir(current)
        except OSError:
            tally.unreadable += 1
            continue
        with scanner:
            for entry in scanner:
                tally.entries += 1
                if tally.entries % 1024 == 0 and time.monotonic() > deadline:
                    return
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    else:
                        tally.size += entry.stat(follow_symlinks=False).st_size
                except OSError:
                    tally.unreadable += 1
                if tally.entries >= max_entries:
                    return
    tally.finished = True


def _incomplete(tally: _Tally, max_entries: int) -> str:
    if not tally.finished:
        limit = "entry limit" if tally.entries >= max_entries else "time limit"
        return f"stopped at the {limit}: size is a lower bound"
    return f"{tally.unreadable} entries unreadable: size is a lower bound"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
