"""A small client for Alertmanager's v2 API: silence an instance during planned work.

Only what operations need: create a silence matching `instance_id=<id>`, expire it, and list
silences (for checks and tests). Every call has a timeout; credentials (optional basic auth
from `config.alertmanager`) never appear in errors or logs.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from exporter.config import INSTANCE_ID_PATTERN, Config
from exporter.errors import DoctorError

log = logging.getLogger(__name__)

CREATED_BY = "ultrabase-doctor"
MATCHER_LABEL = "instance_id"
DEFAULT_TIMEOUT_SECONDS = 5.0
# Silence ids are UUIDs; anything else is refused before it reaches a URL.
_SILENCE_ID = re.compile(r"^[0-9A-Za-z-]{1,64}$")
_MAX_COMMENT = 500


class AlertmanagerError(DoctorError):
    """Alertmanager could not be reached or refused a request."""

    status = 502
    code = "alertmanager_error"


class AlertmanagerClient:
    """Creates and expires silences through Alertmanager's v2 API."""

    def __init__(self, url: str, *, username: str | None = None, password: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT_SECONDS,
                 transport: httpx.BaseTransport | None = None) -> None:
        parsed = httpx.URL(url)
        if parsed.username and not username:
            # Credentials written into the URL are used, then kept out of it.
            username, password = parsed.username, parsed.password
        auth = httpx.BasicAuth(username, password or "") if username else None
        # Shown in errors and logs: never with credentials in it.
        self.url = str(parsed.copy_with(username=None, password=None)).rstrip("/")
        self._http = httpx.Client(base_url=self.url, auth=auth, timeout=httpx.Timeout(timeout),
                                  follow_redirects=False, trust_env=False, transport=transport)

    @classmethod
    def from_config(cls, config: Config) -> AlertmanagerClient | None:
        """A client for config.alertmanager, or None when no URL is configured."""
        section = config.alertmanager
        if not section.url:
            return None
        password = section.password.get_secret_value() if section.password else None
        return cls(section.url, username=section.username, password=password)

    def __repr__(self) -> str:
        return f"AlertmanagerClient({self.url!r})"

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def create_silence(self, instance_id: str, *, comment: str,
                       duration_seconds: float) -> str:
        """Silence every alert labelled instance_id=<id> from now for the duration; its id."""
        if not INSTANCE_ID_PATTERN.fullmatch(instance_id):
            raise AlertmanagerError("not an instance id")
        if not 0 < duration_seconds <= 7 * 86400:
            raise AlertmanagerError("silence duration must be between 0 and 7 days")
        now = datetime.now(UTC)
        payload = {
            "matchers": [{"name": MATCHER_LABEL, "value": instance_id, "isRegex": False,
                          "isEqual": True}],
            "startsAt": _iso(now),
            "endsAt": _iso(now + timedelta(seconds=duration_seconds)),
            "createdBy": CREATED_BY,
            "comment": comment[:_MAX_COMMENT] or CREATED_BY,
        }
        data = self._call("POST", "/api/v2/silences", json=payload)
        silence_id = data.get("silenceID") if isinstance(data, dict) else None
        if not isinstance(silence_id, str) or not _SILENCE_ID.match(silence_id):
            raise AlertmanagerError("Alertmanager answered without a silence id")
        log.info("silenced alerts of %s in Alertmanager (silence %s)", instance_id, silence_id)
        return silence_id

    def expire_silence(self, silence_id: str) -> None:
        """Expire a silence; one already expired or gone counts as done."""
        if not _SILENCE_ID.match(silence_id):
            raise AlertmanagerError("not a silence id")
        try:
            self._call("DELETE", f"/api/v2/silence/{silence_id}")
        except _NotFound:
            log.info("silence %s was already gone", silence_id)
            return
        log.info("expired Alertmanager silence %s", silence_id)

    def silences(self, instance_id: str | None = None) -> list[dict[str, Any]]:
        """Silences known to Alertmanager, optionally only those matching this instance."""
        params = None
        if instance_id is not None:
            if not INSTANCE_ID_PATTERN.fullmatch(instance_id):
                raise AlertmanagerError("not an instance id")
            params = {"filter": f'{MATCHER_LABEL}="{instance_id}"'}
        data = self._call("GET", "/api/v2/silences", params=params)
        if not isinstance(data, list):
            raise AlertmanagerError("Alertmanager answered with something other than a list")
        return [s for s in data if isinstance(s, dict)]

    def active_silences(self, instance_id: str) -> list[dict[str, Any]]:
        """The active silences whose matchers select exactly this instance."""
        out = []
        for silence in self.silences(instance_id):
            state = silence.get("status", {}).get("state")
            if state == "active" and _matches_instance(silence, instance_id):
                out.append(silence)
        return out

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            # The exception text may carry the URL with credentials; only its type is shown.
            raise AlertmanagerError(
                f"Alertmanager at {self.url} unreachable ({type(exc).__name__})") from None
        if response.status_code == 404 and method == "DELETE":
            raise _NotFound()
        if response.status_code >= 400:
            raise AlertmanagerError(
                f"Alertmanager refused {method} {path}: HTTP {response.status_code} "
                f"{response.text[:200].strip()}")
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise AlertmanagerError("Alertmanager answered with invalid JSON") from None


class _NotFound(AlertmanagerError):
    """A silence that Alertmanager does not know."""


def _matches_instance(silence: dict[str, Any], instance_id: str) -> bool:
    matchers = silence.get("matchers")
    if not isinstance(matchers, list):
        return False
    return any(isinstance(m, dict) and m.get("name") == MATCHER_LABEL
               and m.get("value") == instance_id and not m.get("isRegex")
               and m.get("isEqual", True) for m in matchers)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
