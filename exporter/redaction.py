"""Keeping secrets out of everything the tool prints, stores or serves.

A secret is shown at most as its fingerprint: the first 12 hex digits of an HMAC-SHA256
keyed with this installation's own random key (`fingerprint.key` beside the store, 0600,
made on first use and shared by every process that uses the store). Without the key a
fingerprint cannot be checked against guesses, so a viewer cannot confirm that a dashboard
password is `admin`; with it, equal secrets still show equal fingerprints everywhere (in
evidence, in history, across the exporter, the action API and the CLI).

The key is process-wide state: `use_fingerprint_key` installs it once at start-up (the
services and the CLI do, from the store's directory). Until then a random key of this
process is used, so a fingerprint is never an unkeyed hash.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_MIN_SECRET_LENGTH = 4
# Defaults published in the manager's code and Supabase's examples: they protect nothing,
# DEFAULT_CREDENTIALS names them, and replacing "admin" everywhere would garble every
# message that mentions supabase_admin.
PUBLISHED_DEFAULTS = frozenset({
    "admin", "this_password_is_insecure_and_should_be_updated", "your_logflare_key",
    "your-super-secret-and-long-logflare-key",
})
KEY_FILE = "fingerprint.key"
_KEY_BYTES = 32
_key: bytes | None = None
_key_lock = threading.Lock()


def use_fingerprint_key(key: bytes | None) -> bytes | None:
    """Key every fingerprint of this process with `key` from now on; the key it replaces.

    None goes back to a random key of this process (made at the next fingerprint).
    """
    global _key
    if key is not None and len(key) < 16:
        raise ValueError("a fingerprint key needs at least 16 bytes")
    with _key_lock:
        previous, _key = _key, None if key is None else bytes(key)
    return previous


def _current_key() -> bytes:
    global _key
    with _key_lock:
        if _key is None:
            _key = secrets.token_bytes(_KEY_BYTES)
        return _key


def fingerprint(secret: str | None) -> str | None:
    """A short, stable, non-reversible tag for a secret, safe to show (keyed, see above)."""
    if not secret:
        return None
    digest = hmac.new(_current_key(), secret.encode("utf-8", "surrogatepass"),
                      hashlib.sha256).hexdigest()
    return "sha256:" + digest[:12]


def installation_key(store_path: Path) -> bytes:
    """The installation's fingerprint key beside the store: read, or made (0600) once."""
    path = Path(store_path).parent / KEY_FILE
    for _ in range(3):
        try:
            return _read_key(path)
        except FileNotFoundError:
            _create_key(path)
    return _read_key(path)


def install_fingerprint_key(store_path: Path) -> None:
    """use_fingerprint_key(installation_key(...)); a process-own key when that fails."""
    try:
        use_fingerprint_key(installation_key(store_path))
    except (OSError, ValueError) as exc:
        # The CLI run by a user who cannot read the store's directory, say: its
        # fingerprints are keyed all the same, only not comparable with the services'.
        log.warning("fingerprint key beside %s unavailable (%s); fingerprints of this run "
                    "are keyed with a key of its own", store_path,
                    getattr(exc, "strerror", None) or exc)


def _read_key(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        key = os.read(fd, _KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(key) != _KEY_BYTES:
        raise ValueError(f"{path} does not hold a {_KEY_BYTES}-byte key")
    return key


def _create_key(path: Path) -> None:
    """Write a new key to a temp file and link it into place: never half-written, never
    replacing a key another process made meanwhile."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp = path.with_name(f".{KEY_FILE}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, secrets.token_bytes(_KEY_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temp, path)
    except FileExistsError:
        pass  # another process made it first: theirs is the key
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


class Redactor:
    """Replaces every known secret in text or nested data with its fingerprint."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        unique = {s for s in secrets if s and len(s) >= _MIN_SECRET_LENGTH
                  and s not in PUBLISHED_DEFAULTS}
        self._secrets = sorted(unique, key=len, reverse=True)

    def digest(self) -> str:
        """A hash of the secrets this redactor replaces: equal for equal sets; never shown."""
        digest = hashlib.sha256()
        for secret in sorted(self._secrets):
            digest.update(secret.encode("utf-8", "surrogatepass"))
            digest.update(b"\0")
        return digest.hexdigest()

    def extend(self, secrets: Iterable[str | None]) -> Redactor:
        """A redactor knowing these secrets as well."""
        return Redactor([*self._secrets, *secrets])

    def text(self, value: str) -> str:
        """The text with every secret replaced."""
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, f"<redacted {fingerprint(secret)}>")
        return value

    def data(self, value: Any) -> Any:
        """A copy of JSON-like data with every secret replaced in strings and keys."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.text(str(k)): self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value
