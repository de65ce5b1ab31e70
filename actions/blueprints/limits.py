"""Limits on the action API's callers: rate limits of mutating routes, and `?wait=true` slots."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask, current_app
from flask_limiter import Limiter
from limits import RateLimitItem, parse_many

from actions.blueprints.context import RATE_LIMITS_EXTENSION, WAIT_SLOTS_EXTENSION
from exporter.errors import ConfigError, DoctorError
from exporter.web.access import current_principal


class RateLimited(DoctorError):
    """Too many mutating requests by this caller or on this instance."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimits:
    """Per caller and per instance limits of mutating routes (config.actions.rate_limit).

    Flask-Limiter holds the counters (in memory unless RATELIMIT_STORAGE_URI says otherwise:
    counts restart with the process and are per process, which is enough to stop floods).
    They are checked inside the route, after authentication, so an anonymous flood cannot
    use up an instance's allowance and lock its operators out.
    """

    def __init__(self, app: Flask, rate: str) -> None:
        app.config.setdefault("RATELIMIT_STORAGE_URI", "memory://")
        app.config.setdefault("RATELIMIT_HEADERS_ENABLED", False)
        try:
            self._items: list[RateLimitItem] = parse_many(rate)
        except ValueError:
            raise ConfigError(f"actions.rate_limit: {rate!r} is not a rate limit "
                              "(e.g. \"30/minute\" or \"10/second;100/hour\")") from None
        self._limiter = Limiter(key_func=lambda: "unused", app=app, default_limits=[])

    def hit(self, instance_id: str | None) -> None:
        """Count one mutating request by the current caller (and on the instance)."""
        principal = current_principal()
        keys: list[tuple[str, str]] = [("caller", f"{principal.source}:{principal.name}")]
        if instance_id is not None:
            keys.append(("instance", instance_id))
        strategy = self._limiter.limiter
        for scope, key in keys:
            for item in self._items:
                if not strategy.hit(item, "ubd-actions", scope, key):
                    reset = strategy.get_window_stats(item, "ubd-actions", scope, key).reset_time
                    wait = max(1, math.ceil(reset - time.time()))
                    who = "this caller" if scope == "caller" else "this instance"
                    raise RateLimited(f"too many changing requests by {who} "
                                      f"(limit {item}); retry in {wait} s", wait)

    def reset(self) -> None:
        """Forget every count (tests)."""
        self._limiter.reset()


def rate_limits() -> RateLimits:
    """The current app's rate limits."""
    found: RateLimits = current_app.extensions[RATE_LIMITS_EXTENSION]
    return found



class WaitSlots:
    """How many `?wait=true` requests may block a worker thread: in total and per caller."""

    def __init__(self, total: int, per_caller: int) -> None:
        self._total = total
        self._per_caller = per_caller
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}

    @contextmanager
    def hold(self, caller: str) -> Iterator[bool]:
        """Take a slot for the block: yields False (and takes none) when the limits are met."""
        with self._lock:
            granted = (sum(self._held.values()) < self._total
                       and self._held.get(caller, 0) < self._per_caller)
            if granted:
                self._held[caller] = self._held.get(caller, 0) + 1
        try:
            yield granted
        finally:
            if granted:
                with self._lock:
                    self._held[caller] -= 1
                    if not self._held[caller]:
                        del self._held[caller]

    def held(self) -> int:
        """Slots in use now."""
        with self._lock:
            return sum(self._held.values())


def wait_slots() -> WaitSlots:
    """The current app's wait slots."""
    found: WaitSlots = current_app.extensions[WAIT_SLOTS_EXTENSION]
    return found
