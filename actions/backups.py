"""Backups of one instance's configuration files, and of its database when asked.

Layout: <root>/<instance_id>/<backup_id>/ (directories 0700, files 0600) holding

- registry-record.json: this instance's record exactly as it stood in the registry (never
  the whole registry: other instances' secrets stay out);
- env, docker-compose.yml, kong.yml: the env file, rendered compose file and kong.yml;
- db.dump: `pg_dump --format=custom` of the instance's database, when asked;
- manifest.json: id, instance, time, reason, and the sha256 and size of each file.

A backup is built in a hidden temp directory and renamed into place, so it either exists
whole or not at all. Restore verifies every checksum first and writes files back to the
instance's own paths (never to a path read from the backup); the registry gets only this
instance's record replaced. The database dump is kept for the operator (`pg_restore`): no
operation overwrites a live database.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import time
from builtins import list as _list
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from actions.files import FileSet, UnsafeEdit, fsync_dir
from exporter.config import INSTANCE_ID_PATTERN
from exporter.discovery.model import Instance
from exporter.errors import DoctorError
from exporter.pg import ADMIN_USERS, REQUIRE_AUTH, DbLogin, LoginResult, instance_dbname, try_login
from exporter.redaction import Redactor

log = logging.getLogger(__name__)

BACKUP_ID_PATTERN = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}$")
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
# Fixed names inside a backup, by FileSet key; restore never takes a name from the manifest.
ENTRY_NAMES: Mapping[str, str] = {
    "registry": "registry-record.json",
    "env_file": "env",
    "compose_file": "docker-compose.yml",
    "kong_file": "kong.yml",
}
DB_DUMP = "db.dump"
DEFAULT_DUMP_TIMEOUT = 900.0
_DBNAME = re.compile(r"^[A-Za-z0-9_]{1,63}$")
_REASON_MAX = 200
_STALE_TEMP_SECONDS = 3600.0
_CHUNK = 1 << 20
# (host, port, login, timeout) -> how a login went: exporter.pg.try_login.
LoginCheck = Callable[[str, int, DbLogin, float], LoginResult]


class BackupNotFound(DoctorError):
    """No backup of this instance has this id (or the id cannot be one)."""

    status: ClassVar[int] = 404
    code: ClassVar[str] = "not_found"

    def __init__(self) -> None:
        # The id is client input (maybe `../..`): never echoed.
        super().__init__("backup not found")


class BackupCorrupt(DoctorError):
    """A backup's files do not match its manifest; it is not restored."""

    status: ClassVar[int] = 409
    code: ClassVar[str] = "backup_corrupt"


class BackupFailed(DoctorError):
    """A backup could not be made; nothing was kept."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "backup_failed"


@dataclass(frozen=True)
class Backup:
    """One backup as listed: names and sizes, never contents."""

    id: str
    instance_id: str
    created_at: datetime
    reason: str
    files: tuple[str, ...]
    size_bytes: int
    has_db_dump: bool
    verified: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON shape."""
        return {"id": self.id, "instance_id": self.instance_id,
                "created_at": self.created_at.isoformat(), "reason": self.reason,
                "files": list(self.files), "size_bytes": self.size_bytes,
                "has_db_dump": self.has_db_dump, "verified": self.verified}


@dataclass(frozen=True, repr=False)
class BackupContent:
    """A verified backup's file contents, by FileSet key (the dump stays on disk)."""

    backup: Backup
    files: Mapping[str, bytes] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"BackupContent({self.backup.id}, files={sorted(self.files)})"


class BackupStore:
    """Backups under one root directory, per instance, with a retention count."""

    def __init__(self, root: Path, retention: int = 10, *, pg_dump: str | None = None,
                 dump_timeout: float = DEFAULT_DUMP_TIMEOUT,
                 login_check: LoginCheck = try_login) -> None:
        """root/<instance_id>/<backup_id>/; the oldest beyond `retention` are pruned."""
        # login_check: the SCRAM-only login that precedes each pg_dump (see _dump_database).
        if retention < 1:
            raise ValueError("retention must be at least 1")
        self.root = Path(root)
        self.retention = retention
        self._pg_dump = pg_dump
        self._login_check = login_check
        self.dump_timeout = dump_timeout

    # paths

    def _instance_dir(self, instance_id: str) -> Path:
        if not isinstance(instance_id, str) or not INSTANCE_ID_PATTERN.fullmatch(instance_id):
            raise BackupNotFound()
        return self.root / instance_id

    def _backup_dir(self, instance_id: str, backup_id: str) -> Path:
        # The id is checked before it touches a path: no `..`, `/`, NUL or oversize input.
        if not isinstance(backup_id, str) or not BACKUP_ID_PATTERN.fullmatch(backup_id):
            raise BackupNotFound()
        path = self._instance_dir(instance_id) / backup_id
        if path.is_symlink() or not path.is_dir():
            raise BackupNotFound()
        return path

    # create

    def create(self, instance: Instance, reason: str, *, db_dump: bool = False,
               files: FileSet | None = None) -> Backup:
        """Back up the instance's files as they are on disk now (and its database if asked).

        `files` names the files to take (default: the instance's own); pending edits in it
        are not what is backed up: the backup is always the on-disk state.
        """
        reason = _clean_reason(reason)
        instance_dir = self._instance_dir(instance.id)
        _make_private_dir(self.root)
        _make_private_dir(instance_dir)
        self._remove_stale_temps(instance_dir)
        now = datetime.now(UTC)
        backup_id = f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
        temp = instance_dir / f".tmp-{backup_id}"
        temp.mkdir(mode=0o700)
        try:
            entries = self._copy_files(FileSet(instance) if files is None
                                       else _fresh(files, instance), temp)
            dump: dict[str, Any] | None = None
            if db_dump:
                dump = self._dump_database(instance, temp / DB_DUMP)
            manifest = {
                "format": MANIFEST_FORMAT, "id": backup_id, "instance_id": instance.id,
                "created_at": now.isoformat(), "reason": reason, "files": entries,
                "db_dump": dump,
            }
            _write_private(temp / MANIFEST,
                           (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
            fsync_dir(temp)
            os.rename(temp, instance_dir / backup_id)
            fsync_dir(instance_dir)
        except BaseException as exc:
            shutil.rmtree(temp, ignore_errors=True)
            if isinstance(exc, DoctorError | KeyboardInterrupt | SystemExit):
                raise
            if isinstance(exc, OSError):
                raise BackupFailed(f"backup of {instance.id} failed: "
                                   f"{exc.strerror or type(exc).__name__}") from None
            raise
        log.info("backup %s of %s made (%s)", backup_id, instance.id, reason)
        self._prune(instance.id, keep=backup_id)
        return self.get(instance.id, backup_id)

    def _copy_files(self, fileset: FileSet, temp: Path) -> dict[str, dict[str, Any]]:
        linked = fileset.linked()
        if linked:
            # A link in the instance's files is not followed: backing up without that file
            # would make a backup that silently lacks it.
            raise BackupFailed(f"cannot back up {fileset.instance_id}: its "
                               f"{', '.join(k.replace('_', ' ') for k in linked)} is a "
                               "symbolic link or is reached through one, which the doctor "
                               "does not follow")
        entries: dict[str, dict[str, Any]] = {}
        for key, path in fileset.paths().items():
            try:
                if key == "registry":
                    data = fileset.registry_record_text().encode("utf-8")
                else:
                    # Read without following a link anywhere below the instance's root.
                    data = fileset.read_bytes(key)
            except UnsafeEdit as exc:
                raise BackupFailed(f"cannot back up {path.name}: {exc}") from None
            name = ENTRY_NAMES[key]
            _write_private(temp / name, data)
            entries[key] = {"name": name, "source": path.name, "size": len(data),
                            "sha256": hashlib.sha256(data).hexdigest()}
        if not entries:
            raise BackupFailed(f"instance {fileset.instance_id} has none of its files on disk")
        return entries

    def _dump_database(self, instance: Instance, target: Path) -> dict[str, Any]:
        """pg_dump on the host against 127.0.0.1:<db port>; the password only in its env."""
        port = instance.endpoints.db_port
        password = instance.credentials.postgres_password
        if port is None or not password:
            raise BackupFailed("cannot dump the database: its published port or password "
                               "is unknown")
        dbname = instance_dbname(instance)
        if not _DBNAME.match(dbname):
            raise BackupFailed("cannot dump the database: its name is not a plain identifier")
        binary = self._pg_dump or find_pg_dump()
        redactor = Redactor(instance.secrets())
        failures: list[str] = []
        used: str | None = None
        for user in ADMIN_USERS:
            # pg_dump's libpq takes PGREQUIREAUTH from version 16 on and silently ignores it
            # before (Debian 12 ships 15). So the port is first asked with a SCRAM-only
            # login: a listener that wants the password in clear (or MD5) gets nothing,
            # and pg_dump is not run.
            checked = self._login_check(instance.endpoints.db_host, port,
                                        DbLogin(user, password, dbname), 10.0)
            if checked.outcome == "unreachable":
                failures.append(f"{user}: {redactor.text(checked.reason or 'no answer')}")
                break
            done = self._run_pg_dump(binary, port, user, dbname, password, target)
            if done.returncode == 0:
                used = user
                break
            lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
            failures.append(f"{user}: {redactor.text(lines[-1] if lines else 'failed')}")
            if not _login_refused(done.stderr):
                break  # not a login problem: another user will not do better
        if used is None:
            target.unlink(missing_ok=True)
            raise BackupFailed("pg_dump failed: " + "; ".join(failures)[:600])
        with target.open("rb") as handle:
            if handle.read(5) != b"PGDMP":
                raise BackupFailed("pg_dump wrote something that is not a custom-format dump")
        digest, size = _hash_file(target)
        return {"name": DB_DUMP, "size": size, "sha256": digest, "dbname": dbname,
                "user": used, "format": "custom"}

    def _run_pg_dump(self, binary: str, port: int, user: str, dbname: str, password: str,
                     target: Path) -> subprocess.CompletedProcess[bytes]:
        """One pg_dump into a fresh `target` (0600) as `user`."""
        argv = [binary, "--host=127.0.0.1", f"--port={port}", f"--username={user}",
                f"--dbname={dbname}", "--format=custom", "--no-password"]
        # A clean environment: PGPASSWORD goes to pg_dump only, and no PG* variable of
        # this process (PGHOST, PGSERVICE, ...) can redirect it.
        env = {"PATH": os.defpath, "LC_ALL": "C", "PGPASSWORD": password,
               "PGREQUIREAUTH": REQUIRE_AUTH, "PGCONNECT_TIMEOUT": "10",
               "PGAPPNAME": "ultrabase-doctor-backup"}
        target.unlink(missing_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            done = subprocess.run(argv, stdout=fd, stderr=subprocess.PIPE, env=env,
                                  timeout=self.dump_timeout, check=False)
            os.fsync(fd)
        except subprocess.TimeoutExpired:
            raise BackupFailed(f"pg_dump did not finish in {self.dump_timeout:.0f}s") from None
        except OSError as exc:
            raise BackupFailed(f"cannot run pg_dump: {exc.strerror or exc}") from None
        finally:
            os.close(fd)
        return done

    # reading

    def list(self, instance_id: str) -> list[Backup]:
        """The instance's backups, newest first (unreadable ones left out)."""
        directory = self._instance_dir(instance_id)
        if not directory.is_dir():
            return []
        found: list[Backup] = []
        for entry in directory.iterdir():
            if not BACKUP_ID_PATTERN.fullmatch(entry.name) or entry.is_symlink():
                continue
            try:
                found.append(self._describe(instance_id, entry, _read_manifest(entry)))
            except BackupCorrupt as exc:
                log.warning("backup %s of %s is unreadable: %s", entry.name, instance_id, exc)
        return sorted(found, key=lambda b: (b.created_at, b.id), reverse=True)

    def get(self, instance_id: str, backup_id: str) -> Backup:
        """One backup; BackupNotFound for an unknown or malformed id."""
        directory = self._backup_dir(instance_id, backup_id)
        return self._describe(instance_id, directory, _read_manifest(directory))

    def _describe(self, instance_id: str, directory: Path, manifest: Mapping[str, Any],
                  verified: bool | None = None) -> Backup:
        if manifest.get("id") != directory.name or manifest.get("instance_id") != instance_id:
            raise BackupCorrupt("the manifest names another backup or instance")
        files = _manifest_files(manifest)
        dump = manifest.get("db_dump")
        names = [files[k]["name"] for k in ENTRY_NAMES if k in files]
        size = sum(int(files[k]["size"]) for k in files)
        if isinstance(dump, Mapping):
            names.append(DB_DUMP)
            size += int(dump.get("size", 0))
        try:
            created = datetime.fromisoformat(str(manifest["created_at"]))
        except (KeyError, ValueError):
            raise BackupCorrupt("the manifest has no valid creation time") from None
        return Backup(id=directory.name, instance_id=instance_id, created_at=created,
                      reason=str(manifest.get("reason", ""))[:_REASON_MAX],
                      files=tuple(names), size_bytes=size,
                      has_db_dump=isinstance(dump, Mapping), verified=verified)

    def verify(self, instance_id: str, backup_id: str) -> None:
        """Check every file against the manifest's sha256; BackupCorrupt on any mismatch."""
        self.load(instance_id, backup_id)
        directory = self._backup_dir(instance_id, backup_id)
        dump = _read_manifest(directory).get("db_dump")
        if isinstance(dump, Mapping):
            path = directory / DB_DUMP
            if path.is_symlink() or not path.is_file():
                raise BackupCorrupt("the database dump is missing")
            digest, size = _hash_file(path)
            if digest != dump.get("sha256") or size != dump.get("size"):
                raise BackupCorrupt("the database dump does not match the manifest")

    def load(self, instance_id: str, backup_id: str) -> BackupContent:
        """The backup's files, each checked against the manifest (the dump is not read)."""
        directory = self._backup_dir(instance_id, backup_id)
        manifest = _read_manifest(directory)
        backup = self._describe(instance_id, directory, manifest, verified=True)
        contents: dict[str, bytes] = {}
        for key, entry in _manifest_files(manifest).items():
            path = directory / ENTRY_NAMES[key]
            if path.is_symlink() or not path.is_file():
                raise BackupCorrupt(f"{ENTRY_NAMES[key]} is missing from the backup")
            data = path.read_bytes()
            if len(data) != entry["size"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
                raise BackupCorrupt(f"{ENTRY_NAMES[key]} does not match the backup's manifest")
            contents[key] = data
        return BackupContent(backup, contents)

    def db_dump_path(self, instance_id: str, backup_id: str) -> Path | None:
        """Where the backup's database dump is, if it has one (for `pg_restore`)."""
        directory = self._backup_dir(instance_id, backup_id)
        path = directory / DB_DUMP
        return path if path.is_file() and not path.is_symlink() else None

    # restore

    def stage(self, instance: Instance, content: BackupContent) -> FileSet:
        """A FileSet holding the backup's contents as pending edits (nothing written yet)."""
        if content.backup.instance_id != instance.id:
            raise BackupCorrupt("the backup belongs to another instance")
        fileset = FileSet(instance)
        for key, data in content.files.items():
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise BackupCorrupt(f"{ENTRY_NAMES[key]} is not UTF-8 text") from None
            if key == "registry":
                fileset.set_registry_record_text(text)
            else:
                fileset.set_file_text(key, text)
        return fileset

    def restore_files(self, instance: Instance, backup_id: str) -> _list[Path]:
        """Verify, then write the backup's files back atomically; the paths that changed."""
        return self.stage(instance, self.load(instance.id, backup_id)).write()

    # retention

    def _prune(self, instance_id: str, keep: str) -> None:
        """Remove the oldest backups beyond the retention count (never `keep`)."""
        backups = self.list(instance_id)
        for old in backups[self.retention:]:
            if old.id == keep:
                continue
            path = self._instance_dir(instance_id) / old.id
            try:
                shutil.rmtree(path)
                log.info("backup %s of %s pruned (retention %d)", old.id, instance_id,
                         self.retention)
            except OSError as exc:
                log.warning("cannot prune backup %s of %s: %s", old.id, instance_id,
                            exc.strerror or exc)

    @staticmethod
    def _remove_stale_temps(instance_dir: Path) -> None:
        """Temp dirs left by a crash during an earlier backup."""
        cutoff = time.time() - _STALE_TEMP_SECONDS
        for entry in instance_dir.glob(".tmp-*"):
            with contextlib.suppress(OSError):
                if entry.is_dir() and not entry.is_symlink() and entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry)


# --- helpers ----------------------------------------------------------------------------


def find_pg_dump() -> str:
    """The newest Debian pg_dump (/usr/lib/postgresql/<v>/bin), else pg_dump on PATH."""
    versions: list[tuple[int, Path]] = []
    for candidate in Path("/usr/lib/postgresql").glob("*/bin/pg_dump"):
        with contextlib.suppress(ValueError):
            versions.append((int(candidate.parent.parent.name), candidate))
    if versions:
        return str(max(versions)[1])
    found = shutil.which("pg_dump")
    if found is None:
        raise BackupFailed("pg_dump is not installed (Debian: postgresql-client-15)")
    return found


def _login_refused(stderr: bytes) -> bool:
    text = stderr.decode("utf-8", "replace")
    return any(p in text for p in ("password authentication failed", "does not exist",
                                   "no password supplied", "not permitted to log in"))


def _fresh(files: FileSet, instance: Instance) -> FileSet:
    """A FileSet over the same paths that has read nothing yet (the on-disk state)."""
    fresh = FileSet(instance)
    fresh.files = files.files
    return fresh


def _clean_reason(reason: Any) -> str:
    text = str(reason or "manual")
    # Kept in a JSON manifest and shown in listings: one line, printable, bounded.
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(text.split())[:_REASON_MAX] or "manual"


def _make_private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.is_symlink():
        raise BackupFailed(f"{path} is a symbolic link; refusing to keep backups there")
    mode = path.stat().st_mode & 0o777
    if mode != 0o700:
        try:
            os.chmod(path, 0o700)
        except PermissionError:
            raise BackupFailed(f"{path} is mode {mode:o} and cannot be made 0700") from None


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def _hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if path.is_symlink() or not path.is_file():
        raise BackupCorrupt("the backup has no manifest")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise BackupCorrupt("the backup's manifest is unreadable") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise BackupCorrupt("the backup's manifest has an unknown format")
    return data


def _manifest_files(manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The manifest's file entries, each checked for shape; unknown keys are refused."""
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BackupCorrupt("the backup's manifest lists no files")
    out: dict[str, dict[str, Any]] = {}
    for key, entry in files.items():
        if key not in ENTRY_NAMES or not isinstance(entry, dict):
            raise BackupCorrupt("the backup's manifest lists an unknown file")
        if entry.get("name") != ENTRY_NAMES[key] or not isinstance(entry.get("size"), int) \
                or not re.fullmatch(r"[0-9a-f]{64}", str(entry.get("sha256", ""))):
            raise BackupCorrupt("the backup's manifest has a malformed file entry")
        out[key] = entry
    return out

