"""The fleet's component images: one per compose service, imported with `docker import`.

Each image holds, in PATH, only the commands of the real image it stands for (the reference
compose pins them; fleet/README.md lists each image's upstream Dockerfile): busybox applets
for the Alpine images, a Debian or Ubuntu base for the others, the packages their
Dockerfiles add, and nothing at all for PostgREST's. The commands are the host's: Debian's
busybox copied in (scripts/setup.sh unpacks it), and symlinks into the host's /usr, which
every container mounts read-only at HOST_PREFIX (outside PATH). The stand-ins' own runtime
(the host's Python, its packages, the shared libraries) is reached the same way and started
by absolute path (RUNTIME_PYTHON), so it never shows in PATH. Nothing is pulled.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import pwd
import re
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import docker
from docker.errors import APIError, ImageNotFound

from fleet.model import FleetError

FLEET_LABEL = "ultrabase-fleet"
REPOSITORY = "ultrabase-fleet"
HOST_PREFIX = "/.fleet-host"  # the host's /usr is mounted at HOST_PREFIX/usr
RUNTIME = f"{HOST_PREFIX}/runtime"  # a venv-shaped directory that starts the host's Python
RUNTIME_PYTHON = f"{RUNTIME}/bin/python"
STANDINS = "/fleet/standins"  # where the compose file mounts fleet/ (render.CONTAINER_FLEET_DIR)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PG_BIN = "/usr/lib/postgresql/15/bin"
# Debian's dynamic busybox, unpacked by scripts/setup.sh (install_fleet_busybox): its sh
# finds commands through PATH like Alpine's; busybox-static's runs any applet it has.
BUSYBOX = Path(os.environ.get("FLEET_BUSYBOX_DIR", "/var/cache/ultrabase-fleet/busybox"),
               "bin", "busybox")

# The applets of Alpine's busybox: those of Debian's build that Alpine's config
# (aports main/busybox/busyboxconfig, read at busybox 1.29.2 and 1.37.0, so 1.35 and 1.36
# between them) also enables. Alpine has more applets than Debian builds (adduser, pgrep,
# pkill, install, split, ...): those are missing here, as fleet/README.md says.
_NOT_IN_ALPINE = frozenset({
    "ar", "ascii", "crc32", "cttyhack", "devmem", "dpkg", "dpkg-deb", "dumpleases", "ed",
    "freeramdisk", "fsfreeze", "ftpget", "ftpput", "httpd", "i2cdetect", "i2cdump",
    "i2cget", "i2cset", "i2ctransfer", "last", "linuxrc", "logname", "lsscsi", "mim",
    "mke2fs", "mt", "nuke", "patch", "pivot_root", "resume", "rpm", "rpm2cpio", "run-init",
    "start-stop-daemon", "sulogin", "svc", "svok", "taskset", "tc", "telnet", "telnetd",
    "tftp", "ts", "ubirename", "udhcpd", "uevent", "uncompress", "w", "who", "xz",
})
# Base packages of debian:*-slim (Priority: required, plus apt) and of ubuntu:focal; only
# their commands that run from the host's /usr are offered (ELF and sh/bash scripts).
DEBIAN_SLIM = ("apt", "bash", "bsdutils", "coreutils", "dash", "debianutils", "diffutils",
               "dpkg", "findutils", "gpgv", "grep", "gzip", "hostname",
               "init-system-helpers", "libc-bin", "login", "mawk", "mount", "ncurses-bin",
               "passwd", "perl-base", "sed", "sysvinit-utils", "tar", "util-linux")
UBUNTU_FOCAL = (*DEBIAN_SLIM, "bzip2", "e2fsprogs", "fdisk", "logsave", "sensible-utils")
# Commands Debian sets up through alternatives or diversions, not in any package list.
DEBIAN_ALIASES = {"sh": "dash", "awk": "mawk", "which": "which"}
PG_CLIENTS = ("psql", "pg_isready", "pg_dump", "pg_dumpall", "pg_restore", "createdb",
              "dropdb", "createuser", "dropuser", "clusterdb", "reindexdb", "vacuumdb")
# Where a command's host binary is when Debian's /usr/bin entry is a wrapper script that
# cannot run here (the PostgreSQL clients go through pg_wrapper, a perl script).
COMMAND_HOST_PATH: Mapping[str, str] = {name: f"{PG_BIN}/{name}" for name in PG_CLIENTS}
# Where a command sits in the image when not in /usr/bin (Alpine's bash is /bin/bash).
COMMAND_AT: Mapping[str, str] = {"bash": "/bin/bash"}


@dataclass(frozen=True)
class Support:
    """What a command needs around it: host dirs at their place, copied files, links."""

    dirs: tuple[str, ...] = ()
    copies: tuple[str, ...] = ()
    links: Mapping[str, str] = field(default_factory=dict)


COMMAND_SUPPORT: Mapping[str, Support] = {
    "perl": Support(dirs=("/usr/share/perl", "/usr/share/perl5")),
    "git": Support(dirs=("/usr/share/git-core", "/usr/lib/git-core")),
    # The host's OpenSSL reads /usr/lib/ssl/openssl.cnf (a link to /etc/ssl/openssl.cnf).
    "openssl": Support(copies=("/etc/ssl/openssl.cnf",),
                       links={"/usr/lib/ssl/openssl.cnf": "/etc/ssl/openssl.cnf"}),
}


@dataclass(frozen=True)
class Healthcheck:
    """An image's HEALTHCHECK instruction."""

    command: str
    interval: str
    timeout: str
    retries: int

    def instruction(self) -> str:
        """The Dockerfile line, as docker import's --change takes it."""
        return (f"HEALTHCHECK --interval={self.interval} --timeout={self.timeout} "
                f"--retries={self.retries} CMD {self.command}")


@dataclass(frozen=True)
class Launcher:
    """A command in PATH that runs a stand-in (python code run by RUNTIME_PYTHON)."""

    path: str
    code: str


@dataclass(frozen=True)
class ImageSpec:
    """What one component's image holds, and where that list comes from."""

    component: str
    upstream: str  # the image the reference compose pins
    source: str  # the upstream file the tool set is read from
    base: str  # alpine, debian, ubuntu or scratch
    commands: tuple[str, ...] = ()  # host commands by name, beyond the base
    launchers: tuple[Launcher, ...] = ()
    path: str = DEFAULT_PATH
    healthcheck: Healthcheck | None = None
    users: tuple[str, ...] = ()  # passwd lines (name:x:uid:gid:gecos:home:shell)
    links: Mapping[str, str] = field(default_factory=dict)  # image path -> host path
    files: Mapping[str, Path] = field(default_factory=dict)  # image path -> fleet file
    file_owner: str | None = None  # user owning `files` (db: postgres)


def _run_standin(script: str, name: str) -> Launcher:
    return Launcher(name, f"import runpy\nrunpy.run_path({STANDINS + '/' + script!r}, "
                          "run_name='__main__')\n")


_DBINIT = Path(__file__).resolve().parent / "dbinit"
KONG_HEALTHCHECK = Healthcheck("kong health", "10s", "10s", 10)

SPECS: tuple[ImageSpec, ...] = (
    ImageSpec("studio", "supabase/studio:20250113-83c9420",
              "supabase/supabase apps/studio/Dockerfile (node:20-slim base stage: git, "
              "python3, build-essential)", "debian", ("node", "git", "python3", "make"),
              users=("node:x:1000:1000::/home/node:/bin/sh",)),
    ImageSpec("kong", "kong:2.8.1",
              "Kong/docker-kong 2.8.1 alpine/Dockerfile (alpine:3.16; apk add bash, "
              "openssl, perl, git, zip, ...; HEALTHCHECK kong health)", "alpine",
              ("bash", "openssl", "perl", "git", "zip"),
              launchers=(Launcher("/usr/local/bin/kong",
                                  "from kong import cli\nraise SystemExit(cli(sys.argv[1:]))\n"),),
              healthcheck=KONG_HEALTHCHECK,
              users=("kong:x:100:101:Linux User,,,:/home/kong:/sbin/nologin",)),
    ImageSpec("auth", "supabase/gotrue:v2.167.0",
              "supabase/auth v2.167.0 Dockerfile (alpine:3.20, apk add ca-certificates)",
              "alpine", launchers=(_run_standin("gotrue.py", "/usr/local/bin/auth"),
                                   _run_standin("gotrue.py", "/usr/local/bin/gotrue")),
              users=("supabase:x:1000:1000::/home/supabase:/bin/sh",)),
    ImageSpec("rest", "postgrest/postgrest:v12.2.0",
              "PostgREST/postgrest v12.2.0 nix/tools/docker/default.nix (only /bin/postgrest)",
              "scratch", launchers=(_run_standin("postgrest.py", "/bin/postgrest"),)),
    ImageSpec("realtime", "supabase/realtime:v2.34.7",
              "supabase/realtime v2.34.7 Dockerfile (debian:bookworm-slim; apt-get install "
              "openssl locales iptables sudo tini curl)", "debian",
              ("openssl", "locale-gen", "iptables", "sudo", "tini", "curl")),
    ImageSpec("storage", "supabase/storage-api:v1.14.5",
              "supabase/storage v1.14.5 Dockerfile (node:20-alpine3.20; apk add g++ make "
              "python3)", "alpine", ("node", "python3", "make"),
              users=("node:x:1000:1000::/home/node:/bin/sh",)),
    ImageSpec("imgproxy", "darthsim/imgproxy:v3.8.0",
              "imgproxy/imgproxy v3.8.0 docker/Dockerfile (debian:bullseye-slim; bash; "
              "/usr/local/bin/imgproxy)", "debian",
              launchers=(_run_standin("imgproxy", "/usr/local/bin/imgproxy"),),
              users=("imgproxy:x:999:999::/home/imgproxy:/usr/sbin/nologin",)),
    # The real image also has HEALTHCHECK node -e "fetch(.../health)" (5 s, 5 s, 3): left
    # out here, see fleet/README.md.
    ImageSpec("meta", "supabase/postgres-meta:v0.84.2",
              "supabase/postgres-meta v0.84.2 Dockerfile (node:20-slim)", "debian", ("node",),
              users=("node:x:1000:1000::/home/node:/bin/sh",)),
    ImageSpec("functions", "supabase/edge-runtime:v1.67.0",
              "supabase/edge-runtime v1.67.0 Dockerfile (debian:bookworm-slim, perl removed; "
              "/usr/local/bin/edge-runtime)", "debian"),
    ImageSpec("analytics", "supabase/logflare:1.4.0",
              "Logflare/logflare v1.4.0 Dockerfile (alpine:3.17; apk add openssl curl)",
              "alpine", ("openssl", "curl")),
    ImageSpec("db", "supabase/postgres:15.1.1.78",
              "supabase/postgres 15.1.1.78 Dockerfile (ubuntu:focal; postgresql-15, PATH "
              "with its bin dir; config in /etc/postgresql)", "ubuntu", PG_CLIENTS,
              path=f"{DEFAULT_PATH}:{PG_BIN}",
              healthcheck=Healthcheck("pg_isready -U postgres -h localhost", "2s", "2s", 10),
              links={"/usr/lib/postgresql": "/usr/lib/postgresql",
                     "/usr/share/postgresql": "/usr/share/postgresql",
                     "/usr/share/zoneinfo": "/usr/share/zoneinfo"},
              files={"/etc/postgresql/postgresql.conf": _DBINIT / "postgresql.conf",
                     "/etc/postgresql/pg_hba.conf": _DBINIT / "pg_hba.conf",
                     "/etc/postgresql/pg_ident.conf": _DBINIT / "pg_ident.conf"},
              file_owner="postgres"),
    ImageSpec("vector", "timberio/vector:0.28.1-alpine",
              "vectordotdev/vector v0.28.1 distribution/docker/alpine/Dockerfile (alpine:3.14; "
              "apk add ca-certificates tzdata; /usr/local/bin/vector)", "alpine"),
    ImageSpec("supavisor", "supabase/supavisor:1.1.56",
              "supabase/supavisor 1.1.56 Dockerfile (debian:bullseye-slim; apt-get install "
              "openssl locales vim curl htop postgresql-contrib sudo tini cmake)", "debian",
              ("openssl", "locale-gen", "vim", "curl", "htop", "sudo", "tini", "cmake",
               *PG_CLIENTS)),
)
SPECS_BY_COMPONENT: Mapping[str, ImageSpec] = {s.component: s for s in SPECS}


# ---- the host's side -----------------------------------------------------------------------


@dataclass(frozen=True)
class PythonRuntime:
    """The host Python the stand-ins run on: its base interpreter and packages."""

    executable: str  # the base interpreter, real path
    version: str  # "3.11"
    site_packages: str  # the packages the stand-ins import (the venv's, inside one)
    venv: bool


class HostTools:
    """What the host offers to build images from: its busybox, packages and Python."""

    def __init__(self, root: Path = Path("/"), busybox: Path = BUSYBOX) -> None:
        self._root = root
        self._busybox = busybox

    def busybox_applets(self) -> dict[str, str]:
        """Applet name -> its usual path (from `busybox --list-full`)."""
        if not self._busybox.is_file():
            raise FleetError(f"no busybox at {self._busybox} for the fleet's Alpine images: "
                             "run scripts/setup.sh (install_fleet_busybox)")
        listed = subprocess.run([str(self._busybox), "--list-full"], capture_output=True,
                                text=True, check=False, timeout=30).stdout
        applets: dict[str, str] = {}
        for line in listed.split():
            applets.setdefault(PurePosixPath(line).name, "/" + line)
        return applets

    def busybox_binary(self) -> bytes:
        """The busybox executable itself."""
        return self._busybox.read_bytes()

    def package_files(self, package: str) -> list[str]:
        """Paths a Debian package installed (empty when it is not installed)."""
        info = self._root / "var/lib/dpkg/info"
        for name in (f"{package}.list", f"{package}:amd64.list"):
            path = info / name
            if path.is_file():
                return path.read_text(encoding="utf-8", errors="replace").splitlines()
        return []

    def real(self, path: str) -> str | None:
        """The real path of a host file under /usr that exists, else None."""
        real = os.path.realpath(self._root / path.lstrip("/"))
        relative = "/" + os.path.relpath(real, self._root)
        if not relative.startswith("/usr/") or not os.path.isfile(real):
            return None
        return relative

    def which(self, name: str) -> str | None:
        """A Debian-installed host command's real path (what /usr/local holds is the host's
        own business, not a package's)."""
        for directory in ("/usr/bin", "/bin", "/usr/sbin", "/sbin"):
            found = self.real(f"{directory}/{name}")
            if found is not None and os.access(self._root / found.lstrip("/"), os.X_OK):
                return found
        return None

    def runnable(self, path: str) -> bool:
        """True for an ELF binary or a sh/bash script (those run without more of the host)."""
        try:
            with open(self._root / path.lstrip("/"), "rb") as handle:
                head = handle.read(64)
        except OSError:
            return False
        return head.startswith(b"\x7fELF") or re.match(
            rb"#! ?/(?:usr/)?bin/(?:sh|bash)\b", head) is not None

    def read(self, path: str) -> bytes | None:
        """A host file's bytes, or None."""
        try:
            return (self._root / path.lstrip("/")).read_bytes()
        except OSError:
            return None

    def loader(self) -> str:
        """The real path of the dynamic loader host binaries name."""
        return self.real("/lib64/ld-linux-x86-64.so.2") or \
            "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"

    def isdir(self, path: str) -> bool:
        """True for a host directory."""
        return (self._root / path.lstrip("/")).is_dir()

    @staticmethod
    def uid_gid(user: str) -> tuple[int, int] | None:
        """A host account's uid and gid (the db's postgres keeps the host's, for its files)."""
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            return None
        return entry.pw_uid, entry.pw_gid

    @staticmethod
    def python() -> PythonRuntime:
        """The running interpreter's base and, inside a venv, the venv's packages."""
        base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
        return PythonRuntime(base, f"{sys.version_info[0]}.{sys.version_info[1]}",
                             sysconfig.get_paths()["purelib"], sys.prefix != sys.base_prefix)


def in_container(host_path: str) -> str:
    """Where a host path is seen in a fleet container: /usr under HOST_PREFIX, else as is."""
    if host_path == "/usr" or host_path.startswith("/usr/"):
        return HOST_PREFIX + host_path
    return host_path


def runtime_mounts(runtime: PythonRuntime) -> tuple[str, ...]:
    """Host directories to mount read-only at their own path for the Python runtime."""
    wanted = [str(Path(runtime.executable).parent.parent), runtime.site_packages]
    out: list[str] = []
    for path in wanted:
        if path == "/usr" or path.startswith(("/usr/", "/etc/")):
            continue  # under /usr: reached through HOST_PREFIX
        if not any(path == m or path.startswith(m + "/") for m in out):
            out.append(path)
    return tuple(out)


# ---- the image's content -------------------------------------------------------------------


class Rootfs:
    """A rootfs being assembled: directories, files and symlinks by absolute path."""

    def __init__(self) -> None:
        self.dirs: dict[str, int] = {}
        self.files: dict[str, tuple[bytes, int, int, int]] = {}
        self.links: dict[str, str] = {}

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        """A directory and its parents."""
        parts = PurePosixPath(path).parts[1:]
        for n in range(1, len(parts) + 1):
            self.dirs.setdefault("/" + "/".join(parts[:n]), 0o755)
        self.dirs["/" + "/".join(parts)] = mode

    def file(self, path: str, data: bytes, mode: int = 0o644, owner: tuple[int, int] = (0, 0)
             ) -> None:
        """A regular file."""
        self.mkdir(str(PurePosixPath(path).parent))
        self.files[path] = (data, mode, *owner)

    def link(self, path: str, target: str) -> None:
        """A symlink, unless something already sits at path."""
        if path in self.files or path in self.links or path in self.dirs:
            return
        self.mkdir(str(PurePosixPath(path).parent))
        self.links[path] = target

    def commands(self, path: str = DEFAULT_PATH) -> list[str]:
        """Every command name in a directory of `path` (files and links placed there)."""
        dirs = path.split(":")
        return sorted({PurePosixPath(p).name for p in (*self.files, *self.links)
                       if str(PurePosixPath(p).parent) in dirs})

    def tar(self) -> bytes:
        """The rootfs as a tarball (sorted, mtime 0: the same content gives the same bytes)."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path, mode in sorted(self.dirs.items()):
                info = tarfile.TarInfo(path.lstrip("/"))
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, 0
                tar.addfile(info)
            for path, (data, mode, uid, gid) in sorted(self.files.items()):
                info = tarfile.TarInfo(path.lstrip("/"))
                info.size, info.mode, info.mtime, info.uid, info.gid = \
                    len(data), mode, 0, uid, gid
                tar.addfile(info, io.BytesIO(data))
            for path, target in sorted(self.links.items()):
                info = tarfile.TarInfo(path.lstrip("/"))
                info.type, info.linkname, info.mtime = tarfile.SYMTYPE, target, 0
                tar.addfile(info)
        return buffer.getvalue()


_BASE_DIRS = {"/tmp": 0o1777, "/var/tmp": 0o1777, "/run": 0o755, "/root": 0o700,
              "/home": 0o755, "/proc": 0o555, "/sys": 0o555, "/dev": 0o755,
              "/bin": 0o755, "/sbin": 0o755, "/usr/bin": 0o755, "/usr/sbin": 0o755,
              "/usr/local/bin": 0o755, "/usr/local/sbin": 0o755, "/etc": 0o755}
_NSSWITCH = b"passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"


def build_rootfs(spec: ImageSpec, host: HostTools, runtime: PythonRuntime) -> Rootfs:
    """The rootfs of one component's image."""
    fs = Rootfs()
    for path, mode in _BASE_DIRS.items():
        fs.mkdir(path, mode)
    fs.link("/var/run", "../run")
    _runtime_support(fs, host, runtime)
    _accounts(fs, spec, host)
    if spec.base == "alpine":
        _alpine_commands(fs, host)
    elif spec.base in ("debian", "ubuntu"):
        _debian_commands(fs, host, DEBIAN_SLIM if spec.base == "debian" else UBUNTU_FOCAL)
    for name in spec.commands:
        if _command(fs, host, name, COMMAND_AT.get(name, f"/usr/bin/{name}")):
            _command_support(fs, host, COMMAND_SUPPORT.get(name, Support()))
    _component_files(fs, spec, host, runtime)
    return fs


def _alpine_commands(fs: Rootfs, host: HostTools) -> None:
    """Busybox and its applets, and Alpine's musl-utils."""
    _busybox(fs, host)
    for name in ("getent", "getconf", "iconv"):  # Alpine's musl-utils
        _command(fs, host, name, f"/usr/bin/{name}")


def _debian_commands(fs: Rootfs, host: HostTools, packages: Iterable[str]) -> None:
    """The runnable commands the image's packages put in a PATH directory, and the aliases."""
    for package in packages:
        for listed in host.package_files(package):
            if _in_path_dir(listed):
                real = host.real(listed)
                if real is not None and host.runnable(real):
                    fs.link(listed, in_container(real))
    for name, command in DEBIAN_ALIASES.items():
        _command(fs, host, command, f"/usr/bin/{name}" if name != "sh" else "/bin/sh")


def _command_support(fs: Rootfs, host: HostTools, support: Support) -> None:
    """The data directories, copied files and links a placed command needs."""
    for data in support.dirs:
        if host.isdir(data):
            fs.link(data, in_container(data))
    for copied in support.copies:
        content = host.read(copied)
        if content is not None:
            fs.file(copied, content)
    for at, target in support.links.items():
        fs.link(at, target)


def _component_files(fs: Rootfs, spec: ImageSpec, host: HostTools,
                     runtime: PythonRuntime) -> None:
    """The component's own launchers, links and files."""
    for launcher in spec.launchers:
        fs.file(launcher.path, _launcher_source(launcher, runtime), 0o755)
    for image_path, host_path in spec.links.items():
        fs.link(image_path, in_container(host_path))
    owner = host.uid_gid(spec.file_owner) if spec.file_owner else None
    for image_path, source in spec.files.items():
        fs.file(image_path, source.read_bytes(), 0o644, owner or (0, 0))
    if spec.component == "kong":
        fs.mkdir("/usr/local/kong")  # Kong's prefix (docker-kong: mkdir -p /usr/local/kong)


def _in_path_dir(path: str) -> bool:
    return str(PurePosixPath(path).parent) in ("/bin", "/sbin", "/usr/bin", "/usr/sbin")


def _command(fs: Rootfs, host: HostTools, name: str, at: str) -> bool:
    """Link `at` to the host's command `name` when the host has it in a form that runs."""
    real = host.real(COMMAND_HOST_PATH[name]) if name in COMMAND_HOST_PATH else \
        host.which(name)
    if real is None or not host.runnable(real):
        return False
    fs.link(at, in_container(real))
    return True


def _busybox(fs: Rootfs, host: HostTools) -> None:
    applets = host.busybox_applets()
    fs.file("/bin/busybox", host.busybox_binary(), 0o755)
    for name, path in sorted(applets.items()):
        if name != "busybox" and name not in _NOT_IN_ALPINE:
            fs.link(path, "/bin/busybox")


def _runtime_support(fs: Rootfs, host: HostTools, runtime: PythonRuntime) -> None:
    """The loader and libraries host binaries need, and the Python the stand-ins run on."""
    loader = host.loader()
    libdir = str(PurePosixPath(loader).parent)
    fs.link(f"/lib64/{PurePosixPath(loader).name}", in_container(loader))
    fs.link(f"/lib/{PurePosixPath(libdir).name}", in_container(libdir))
    fs.link(libdir, in_container(libdir))
    fs.file(f"{RUNTIME}/pyvenv.cfg", (
        f"home = {in_container(str(PurePosixPath(runtime.executable).parent))}\n"
        f"include-system-site-packages = {'false' if runtime.venv else 'true'}\n"
        f"version = {runtime.version}\n").encode())
    fs.link(RUNTIME_PYTHON, in_container(runtime.executable))
    if runtime.venv:
        fs.link(f"{RUNTIME}/lib/python{runtime.version}/site-packages",
                in_container(runtime.site_packages))
    fs.file("/etc/nsswitch.conf", _NSSWITCH)


def _accounts(fs: Rootfs, spec: ImageSpec, host: HostTools) -> None:
    shell = "/bin/ash" if spec.base == "alpine" else "/bin/bash"
    users = [f"root:x:0:0:root:/root:{shell}",
             "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin", *spec.users]
    if spec.file_owner:
        uid, gid = host.uid_gid(spec.file_owner) or (101, 102)
        users.append(f"{spec.file_owner}:x:{uid}:{gid}:PostgreSQL administrator:"
                     f"/var/lib/postgresql:/bin/bash")
    groups = ["root:x:0:", "nogroup:x:65534:"]
    for line in users[2:]:
        fields = line.split(":")
        groups.append(f"{fields[0]}:x:{fields[3]}:")
        home = fields[5]
        if home.startswith("/home/"):
            fs.mkdir(home)
    fs.file("/etc/passwd", ("\n".join(users) + "\n").encode())
    fs.file("/etc/group", ("\n".join(groups) + "\n").encode())


def _launcher_source(launcher: Launcher, runtime: PythonRuntime) -> bytes:
    # -S: no site module (and no scan of every .pth file) for a command a healthcheck may
    # run every few seconds; the packages directory is put on the path directly.
    packages = in_container(runtime.site_packages)
    return (f"#!{RUNTIME_PYTHON} -S\n"
            f'"""{PurePosixPath(launcher.path).name} in the fleet: runs its stand-in."""\n'
            f"import sys\nsys.path[0] = {STANDINS!r}\nsys.path.append({packages!r})\n"
            f"{launcher.code}").encode()


# ---- docker --------------------------------------------------------------------------------


def changes(spec: ImageSpec) -> list[str]:
    """The image config, as docker import's --change instructions."""
    out = [f"LABEL {FLEET_LABEL}=1", f"LABEL {FLEET_LABEL}.component={spec.component}",
           f"ENV PATH={spec.path}"]
    if spec.healthcheck is not None:
        out.append(spec.healthcheck.instruction())
    return out


def image_tag(spec: ImageSpec, tar: bytes) -> str:
    """repository/component:tag, the tag being a hash of the rootfs and the image config."""
    digest = hashlib.sha256(tar + "\n".join(changes(spec)).encode()).hexdigest()
    return f"{REPOSITORY}/{spec.component}:{digest[:12]}"


@contextmanager
def _host_lock(name: str, mode: int) -> Iterator[None]:
    """A lock shared by every process of this host that makes or removes fleets (flock)."""
    path = Path(tempfile.gettempdir()) / f"ultrabase-fleet-{name}.lock"
    with path.open("a") as handle:
        fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def in_use() -> contextlib.AbstractContextManager[None]:
    """Held while a fleet comes up: from ensure_images() until its instances are up, no
    process removes the images (remove_image() waits), so none vanishes before it is used.
    Never call remove_image() while holding it: it would wait on this very hold."""
    return _host_lock("images", fcntl.LOCK_SH)


def ensure_images(client: docker.DockerClient, host: HostTools | None = None,
                  specs: Iterable[ImageSpec] = SPECS) -> dict[str, str]:
    """Build each component's image unless one with its content hash exists; tags by component.

    One process at a time imports: two fleets coming up side by side import each image once.
    """
    host = host or HostTools()
    runtime = host.python()
    tags: dict[str, str] = {}
    for spec in specs:
        tar = build_rootfs(spec, host, runtime).tar()
        tag = image_tag(spec, tar)
        with _host_lock("import", fcntl.LOCK_EX):
            try:
                client.images.get(tag)
            except ImageNotFound:
                repository, _, version = tag.rpartition(":")
                client.api.import_image_from_data(tar, repository=repository, tag=version,
                                                  changes=changes(spec))
                client.images.get(tag)
        tags[spec.component] = tag
    return tags


def remove_image(client: docker.DockerClient, tag: str) -> bool:
    """Remove the image unless containers still use it; True when it is gone.

    Removal is by id: removing by tag while a container still refers to the image would
    only untag it and leave it dangling. It waits for the fleets coming up (in_use()).
    """
    with _host_lock("images", fcntl.LOCK_EX):
        try:
            image = client.images.get(tag)
        except ImageNotFound:
            return True
        image_id = image.id or tag  # an image the engine lists always has an id
        if client.api.containers(all=True, filters={"ancestor": image_id}):
            return False
        try:
            client.images.remove(image_id)
        except ImageNotFound:
            return True
        except APIError as exc:
            if exc.status_code == 409:
                return False
            raise
        return True
