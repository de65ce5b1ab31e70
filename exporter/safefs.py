"""Reading and writing an instance's files without following a symbolic link below its root.

An instance's tree (the manager's supabase-core directory, or a compose project's
directory) is written by the manager and, through bind mounts, partly by the instance's own
containers. A symbolic link planted anywhere in it, on a file or on a directory such as
`volumes-<id>/api`, must not lead a read or a write of the doctor (often root) outside the
tree. So paths are opened component by component from the root, each directory and the
file itself with O_NOFOLLOW, and every later call works on the descriptors obtained
(openat-style): a link swapped in between two calls is not followed either.

The root itself is configuration (ultrabase.core_dir, say) and may be a link; nothing
below it may be.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePath

from exporter.errors import DoctorError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Reads take no more than this from one file (the largest a config file gets).
MAX_READ_BYTES = 16 * 1024 * 1024


class SymlinkRefused(DoctorError):
    """A path below an instance's root is (or passes through) a symbolic link."""


def within(root: Path | None, path: Path) -> Path:
    """The root to open `path` from: `root` when path lies below it, else path's parent."""
    normal = PurePath(os.path.normpath(path))
    if root is not None and normal != PurePath(os.path.normpath(root)) and \
            normal.is_relative_to(os.path.normpath(root)):
        return root
    return path.parent


def _parts(root: Path, path: Path) -> tuple[str, ...]:
    relative = PurePath(os.path.normpath(path)).relative_to(os.path.normpath(root))
    parts = relative.parts
    if not parts or any(p in ("", ".", "..") for p in parts):
        raise SymlinkRefused(f"{path} is not a file below {root}")
    return parts


def _refusal(root: Path, parts: tuple[str, ...], upto: int,
             exc: OSError) -> OSError | SymlinkRefused:
    """A SymlinkRefused when the component that failed is a link; else the error itself."""
    where = root.joinpath(*parts[:upto + 1])
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
        with contextlib.suppress(OSError):
            if where.is_symlink():
                return SymlinkRefused(f"{where} is a symbolic link; the doctor does not follow "
                                      "links inside an instance's files")
    return exc


@contextmanager
def parent_dir(root: Path, path: Path) -> Iterator[tuple[int, str]]:
    """(directory fd, file name) of path, every directory from root opened with O_NOFOLLOW."""
    parts = _parts(root, path)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for index, part in enumerate(parts[:-1]):
            try:
                following = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                error = _refusal(root, parts, index, exc)
                if error is exc:
                    raise
                raise error from None
            os.close(fd)
            fd = following
        yield fd, parts[-1]
    finally:
        os.close(fd)


def lstat_under(root: Path, path: Path) -> os.stat_result:
    """The path's own stat (a link is not followed); SymlinkRefused for a link on the way."""
    with parent_dir(root, path) as (directory, name):
        return os.stat(name, dir_fd=directory, follow_symlinks=False)


def kind(root: Path, path: Path) -> str:
    """"file", "dir", "symlink", "other" or "missing", without following any link."""
    try:
        mode = lstat_under(root, path).st_mode
    except FileNotFoundError:
        return "missing"
    except SymlinkRefused:
        return "symlink"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISREG(mode):
        return "file"
    return "dir" if stat.S_ISDIR(mode) else "other"


def _open_last(root: Path, path: Path, directory: int, name: str, flags: int) -> int:
    """Open the last component in its directory, refusing a link there too."""
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
    except OSError as exc:
        parts = _parts(root, path)
        error = _refusal(root, parts, len(parts) - 1, exc)
        if error is exc:
            raise
        raise error from None


def read_bytes(root: Path, path: Path, *, limit: int = MAX_READ_BYTES) -> bytes:
    """A regular file's content, opened without following any link below root."""
    with parent_dir(root, path) as (directory, name):
        fd = _open_last(root, path, directory, name, os.O_RDONLY | os.O_NONBLOCK)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise SymlinkRefused(f"{path} is not a regular file")
            chunks: list[bytes] = []
            size = 0
            while chunk := os.read(fd, 1 << 20):
                size += len(chunk)
                if size > limit:
                    raise SymlinkRefused(f"{path} is larger than {limit} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)


def read_text(root: Path, path: Path) -> str:
    """A regular file's UTF-8 text, opened without following any link below root."""
    return read_bytes(root, path).decode("utf-8")


def list_dir(root: Path, path: Path) -> list[str]:
    """The names in a directory opened without following any link (root itself allowed)."""
    if os.path.normpath(path) == os.path.normpath(root):
        return sorted(os.listdir(root))
    with parent_dir(root, path) as (directory, name):
        fd = _open_last(root, path, directory, name, os.O_RDONLY | os.O_DIRECTORY)
        try:
            return sorted(os.listdir(fd))
        finally:
            os.close(fd)


def replace_file(root: Path, path: Path, payload: bytes, *, mode: int | None = None) -> None:
    """Replace path's content atomically: temp file beside it, fsync, rename, fsync the dir.

    Every directory is opened from root without following links, and the temp file, the
    rename and the fsyncs all work on that directory's descriptor. The original mode (and
    owner, when allowed) is kept unless `mode` is given; a new file gets 0600. A link at
    the path is refused, not replaced. On failure the original is untouched and no temp
    file is left.
    """
    with parent_dir(root, path) as (directory, name):
        try:
            before: os.stat_result | None = os.stat(name, dir_fd=directory,
                                                    follow_symlinks=False)
        except FileNotFoundError:
            before = None
        if before is not None and not stat.S_ISREG(before.st_mode):
            raise SymlinkRefused(f"{path} is a symbolic link or not a regular file; "
                                 "refusing to replace it")
        if mode is None:
            mode = stat.S_IMODE(before.st_mode) if before is not None else 0o600
        temp = f".{name}.{secrets.token_hex(4)}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=directory)
        try:
            try:
                os.fchmod(fd, mode)
                if before is not None and (before.st_uid, before.st_gid) != (os.geteuid(),
                                                                            os.getegid()):
                    # The manager may run as another user: it must keep owning its files.
                    with contextlib.suppress(PermissionError):
                        os.fchown(fd, before.st_uid, before.st_gid)
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, name, src_dir_fd=directory, dst_dir_fd=directory)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp, dir_fd=directory)
            raise
        os.fsync(directory)
