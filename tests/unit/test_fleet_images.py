"""fleet/images.py: what each component image holds, built from a fake host tree.

The host here is a directory made by the test: a fake busybox (a script printing its applet
list), dpkg file lists, ELF and script stubs. Docker is not involved: only the rootfs and
the image config are checked.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from fleet import images
from fleet.model import COMPONENTS, FleetError

RUNTIME = images.PythonRuntime("/opt/py/bin/python3.11", "3.11",
                               "/work/venv/lib/python3.11/site-packages", True)
ELF = b"\x7fELF\x02\x01\x01" + bytes(57)


def _exe(root: Path, path: str, content: bytes = ELF) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)
    target.chmod(0o755)


@pytest.fixture
def host(tmp_path: Path) -> images.HostTools:
    root = tmp_path / "host"
    busybox = tmp_path / "busybox"
    applets = ["bin/sh", "usr/bin/wget", "usr/bin/nc", "usr/bin/timeout", "bin/ls",
               "usr/bin/xz", "usr/bin/patch", "bin/busybox"]
    busybox.write_text("#!/bin/sh\nprintf '%s\\n' " + " ".join(applets) + "\n")
    busybox.chmod(0o755)
    for name in ("curl", "node", "bash", "openssl", "getent", "dash", "mawk", "python3.11",
                 "ls", "cat"):
        _exe(root, f"/usr/bin/{name}")
    (root / "usr/bin/python3").symlink_to("python3.11")
    _exe(root, "/usr/bin/zcat", b"#!/bin/sh\nexec gzip -cd \"$@\"\n")
    _exe(root, "/usr/sbin/adduser", b"#!/usr/bin/perl\nuse strict;\n")
    for name in ("psql", "pg_isready", "postgres"):
        _exe(root, f"{images.PG_BIN}/{name}")
    (root / "usr/bin/psql").symlink_to("../share/postgresql-common/pg_wrapper")
    _exe(root, "/usr/share/postgresql-common/pg_wrapper", b"#!/usr/bin/perl\n")
    _exe(root, "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    (root / "lib64").mkdir()
    (root / "lib64/ld-linux-x86-64.so.2").symlink_to(
        "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    (root / "etc/ssl").mkdir(parents=True)
    (root / "etc/ssl/openssl.cnf").write_text("[req]\n")
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    (info / "coreutils.list").write_text("/.\n/usr\n/usr/bin\n/usr/bin/ls\n/usr/bin/cat\n"
                                         "/usr/share/doc/coreutils\n")
    (info / "gzip.list").write_text("/usr/bin/zcat\n")
    (info / "passwd.list").write_text("/usr/sbin/adduser\n")
    (info / "dash:amd64.list").write_text("/usr/bin/dash\n")
    return images.HostTools(root=root, busybox=busybox)


def rootfs(host: images.HostTools, component: str) -> images.Rootfs:
    return images.build_rootfs(images.SPECS_BY_COMPONENT[component], host, RUNTIME)


def test_every_component_has_a_spec_naming_its_real_image_and_source() -> None:
    assert [s.component for s in images.SPECS] == list(COMPONENTS)
    for spec in images.SPECS:
        assert ":" in spec.upstream and spec.source
        assert spec.base in ("alpine", "debian", "ubuntu", "scratch")


def test_alpine_images_have_alpines_busybox_applets_and_nothing_of_the_host(
        host: images.HostTools) -> None:
    fs = rootfs(host, "auth")
    assert fs.commands() == ["auth", "busybox", "getent", "gotrue", "ls", "nc", "sh", "timeout",
                             "wget"]
    # xz and patch are applets Debian builds and Alpine's config leaves out.
    assert {"xz", "patch", "curl", "bash", "node"}.isdisjoint(fs.commands())
    assert fs.links["/usr/bin/wget"] == "/bin/busybox"
    assert fs.files["/bin/busybox"][1] == 0o755


def test_kong_has_bash_openssl_and_kong_and_the_image_healthcheck(
        host: images.HostTools) -> None:
    fs = rootfs(host, "kong")
    assert {"bash", "openssl", "kong", "wget", "sh"} <= set(fs.commands())
    assert "curl" not in fs.commands()
    assert fs.links["/bin/bash"] == f"{images.HOST_PREFIX}/usr/bin/bash"
    # The host's OpenSSL finds its config where Debian's build looks for it.
    assert fs.files["/etc/ssl/openssl.cnf"][0] == b"[req]\n"
    assert fs.links["/usr/lib/ssl/openssl.cnf"] == "/etc/ssl/openssl.cnf"
    assert "/usr/local/kong" in fs.dirs
    source = fs.files["/usr/local/bin/kong"][0].decode()
    assert source.startswith(f"#!{images.RUNTIME_PYTHON} -S\n")
    assert "from kong import cli" in source
    assert ("HEALTHCHECK --interval=10s --timeout=10s --retries=10 CMD kong health"
            in images.changes(images.SPECS_BY_COMPONENT["kong"]))


def test_rest_has_postgrest_and_no_shell(host: images.HostTools) -> None:
    fs = rootfs(host, "rest")
    assert fs.commands() == ["postgrest"]
    assert "/bin/busybox" not in fs.files


def test_debian_images_take_runnable_commands_from_the_base_packages(
        host: images.HostTools) -> None:
    fs = rootfs(host, "meta")
    commands = fs.commands()
    assert {"ls", "cat", "zcat", "sh", "awk", "node"} <= set(commands)
    assert fs.links["/bin/sh"] == f"{images.HOST_PREFIX}/usr/bin/dash"
    # a perl script needs more of the host than is mounted
    assert "adduser" not in commands
    assert {"curl", "wget", "busybox"}.isdisjoint(commands)


def test_db_has_the_postgres_programs_and_its_config(host: images.HostTools) -> None:
    fs = rootfs(host, "db")
    spec = images.SPECS_BY_COMPONENT["db"]
    assert spec.path.endswith(f":{images.PG_BIN}")
    # psql's /usr/bin entry is pg_wrapper (perl): the program itself is linked instead.
    assert fs.links["/usr/bin/psql"] == f"{images.HOST_PREFIX}{images.PG_BIN}/psql"
    assert fs.links["/usr/lib/postgresql"] == f"{images.HOST_PREFIX}/usr/lib/postgresql"
    assert {"curl", "wget"}.isdisjoint(fs.commands(spec.path))
    conf = fs.files["/etc/postgresql/postgresql.conf"][0].decode()
    assert "log_line_prefix = '%h %m [%p] %q%u@%d '" in conf
    hba = fs.files["/etc/postgresql/pg_hba.conf"][0].decode()
    assert "host  all  all  127.0.0.1/32  trust" in hba
    passwd = fs.files["/etc/passwd"][0].decode()
    assert any(line.startswith("postgres:x:") for line in passwd.splitlines())


def test_the_runtime_is_outside_path(host: images.HostTools) -> None:
    fs = rootfs(host, "auth")
    assert fs.links[images.RUNTIME_PYTHON] == "/opt/py/bin/python3.11"
    assert fs.files[f"{images.RUNTIME}/pyvenv.cfg"][0].decode().splitlines()[:2] == [
        "home = /opt/py/bin", "include-system-site-packages = false"]
    assert fs.links[f"{images.RUNTIME}/lib/python3.11/site-packages"] == \
        RUNTIME.site_packages
    assert fs.links["/lib64/ld-linux-x86-64.so.2"] == \
        f"{images.HOST_PREFIX}/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    for spec in images.SPECS:
        assert images.HOST_PREFIX not in spec.path and "/fleet" not in spec.path
    assert images.runtime_mounts(RUNTIME) == ("/opt/py", RUNTIME.site_packages)
    # a Python under /usr is reached through the /usr mount
    system = images.PythonRuntime("/usr/bin/python3.11", "3.11",
                                  "/usr/lib/python3/dist-packages", False)
    assert images.runtime_mounts(system) == ()
    assert images.in_container("/usr/bin/python3.11") == f"{images.HOST_PREFIX}/usr/bin/python3.11"


def test_the_tarball_is_deterministic_and_the_tag_follows_content(
        host: images.HostTools) -> None:
    spec = images.SPECS_BY_COMPONENT["kong"]
    first, second = rootfs(host, "kong").tar(), rootfs(host, "kong").tar()
    assert first == second
    assert images.image_tag(spec, first).startswith("ultrabase-fleet/kong:")
    assert images.image_tag(spec, first) != images.image_tag(spec, first + b"x")
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        names = tar.getnames()
    assert "bin/busybox" in names and "usr/local/bin/kong" in names


def test_no_busybox_is_a_clear_error(tmp_path: Path) -> None:
    missing = images.HostTools(root=tmp_path, busybox=tmp_path / "none")
    with pytest.raises(FleetError, match="install_fleet_busybox"):
        images.build_rootfs(images.SPECS_BY_COMPONENT["vector"], missing, RUNTIME)
