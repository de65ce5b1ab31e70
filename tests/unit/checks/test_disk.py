"""disk_usage on real temporary directories and files."""

from __future__ import annotations

import shutil
from pathlib import Path

from exporter.checks.base import status_of
from exporter.checks.disk import DiskUsageCheck
from exporter.config import Thresholds
from exporter.discovery.model import InstanceFiles
from tests.unit.checks.plainhost import (
    ScriptedDocker,
    codes,
    context,
    make_instance,
    only,
    tmp_file,
)

QUIET = Thresholds(disk_low_free_percent=0, disk_critical_free_percent=0)


def layout(root: Path) -> InstanceFiles:
    """An Ultrabase volumes dir with the three named volume dirs, holding 1000+2000+0 bytes."""
    volumes = root / "volumes-abcd1234"
    tmp_file(volumes / "db" / "data" / "base" / "1" / "16384", 1000)
    tmp_file(volumes / "storage" / "stub" / "bucket" / "file.png", 2000)
    (volumes / "functions").mkdir(parents=True)
    return InstanceFiles(volumes_dir=volumes, volume_dirs={
        "db_data": volumes / "db" / "data", "storage": volumes / "storage",
        "functions": volumes / "functions"})


def test_sizes_and_filesystem_details(tmp_path: Path) -> None:
    files = layout(tmp_path)
    findings = DiskUsageCheck(docker_root=tmp_path / "docker").run(
        context(make_instance(files=files), ScriptedDocker(), thresholds=QUIET))
    assert findings.issues == ()
    volumes = findings.details["volumes"]
    assert volumes["db_data"]["size_bytes"] == 1000 and volumes["db_data"]["complete"] is True
    assert volumes["storage"]["size_bytes"] == 2000 and volumes["storage"]["exists"] is True
    assert volumes["functions"]["size_bytes"] == 0
    fs = findings.details["filesystem"]
    usage = shutil.disk_usage(tmp_path)
    assert fs["path"] == str(files.volumes_dir) and fs["size_bytes"] == usage.total
    assert 0 < fs["avail_bytes"] <= usage.total and 0 <= fs["free_percent"] <= 100


def test_low_then_critical_free_space(tmp_path: Path) -> None:
    files = layout(tmp_path)
    instance = make_instance(files=files)
    low = DiskUsageCheck().run(context(instance, ScriptedDocker(), thresholds=Thresholds(
        disk_low_free_percent=100, disk_critical_free_percent=0)))
    issue = only(low.issues, "DISK_SPACE_LOW")
    assert issue.evidence["threshold_percent"] == 100 and "avail_bytes" in issue.evidence
    assert status_of(low) == "degraded"
    critical = DiskUsageCheck().run(context(instance, ScriptedDocker(), thresholds=Thresholds(
        disk_low_free_percent=100, disk_critical_free_percent=100)))
    assert codes(critical.issues) == ["DISK_SPACE_CRITICAL"]


def test_missing_volume_dir(tmp_path: Path) -> None:
    files = layout(tmp_path)
    shutil.rmtree(files.volume_dirs["db_data"])
    findings = DiskUsageCheck().run(context(make_instance(files=files), ScriptedDocker(),
                                            thresholds=QUIET))
    issue = only(findings.issues, "VOLUME_MISSING")
    assert issue.component == "db"
    assert issue.evidence["path"] == str(files.volume_dirs["db_data"])
    assert findings.details["volumes"]["db_data"]["exists"] is False


def test_walk_limit_gives_a_lower_bound(tmp_path: Path) -> None:
    files = layout(tmp_path)
    for i in range(20):
        tmp_file(files.volume_dirs["storage"] / f"f{i}", 100)
    findings = DiskUsageCheck(max_entries=5).run(
        context(make_instance(files=files), ScriptedDocker(), thresholds=QUIET))
    storage = findings.details["volumes"]["storage"]
    assert storage["complete"] is False and storage["size_bytes"] < 4000
    assert "lower bound" in storage["error"]


def test_oversized_container_log(tmp_path: Path) -> None:
    files = layout(tmp_path)
    instance = make_instance(files=files)
    docker_root = tmp_path / "docker"
    auth_id = instance.components["auth"].container.id  # type: ignore[union-attr]
    rest_id = instance.components["rest"].container.id  # type: ignore[union-attr]
    tmp_file(docker_root / "containers" / auth_id / f"{auth_id}-json.log", 5000)
    tmp_file(docker_root / "containers" / rest_id / f"{rest_id}-json.log", 10)
    findings = DiskUsageCheck(docker_root=docker_root).run(context(
        instance, ScriptedDocker(),
        thresholds=Thresholds(disk_low_free_percent=0, disk_critical_free_percent=0,
                              logs_oversized_bytes=1000)))
    issue = only(findings.issues, "LOGS_OVERSIZED")
    assert issue.component == "auth" and issue.evidence["bytes"] == 5000
    # Components without a readable log are simply absent.
    assert findings.details["logs_bytes"] == {"auth": 5000, "rest": 10}


def test_missing_volumes_dir_measures_the_nearest_parent(tmp_path: Path) -> None:
    gone = tmp_path / "nowhere" / "volumes-x"
    files = InstanceFiles(volumes_dir=gone, volume_dirs={"storage": gone / "storage"})
    findings = DiskUsageCheck().run(context(make_instance(files=files), ScriptedDocker(),
                                            thresholds=QUIET))
    assert findings.details["filesystem"]["path"] == str(tmp_path)
    assert codes(findings.issues) == ["VOLUME_MISSING"]


def test_docker_unreachable_skips_only_the_logs(tmp_path: Path) -> None:
    files = layout(tmp_path)
    findings = DiskUsageCheck(docker_root=tmp_path).run(context(
        make_instance(files=files, runtime_known=False), ScriptedDocker(down=True),
        thresholds=QUIET))
    assert findings.details["logs_skipped"] == "docker unreachable"
    assert findings.details["volumes"]["storage"]["size_bytes"] == 2000
