"""Keeping secrets out of everything the tool prints, stores or serves."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

_MIN_SECRET_LENGTH = 4


def fingerprint(secret: str | None) -> str | None:
    """A short, stable, non-reversible tag for a secret, safe to show."""
    if not secret:
        return None
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:12]


class Redactor:
    """Replaces every known secret in text or nested data with its fingerprint."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        unique = {s for s in secrets if s and len(s) >= _MIN_SECRET_LENGTH}
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
