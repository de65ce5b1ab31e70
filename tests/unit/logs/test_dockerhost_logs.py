"""DockerHost's side of log reads that needs no engine: since as Docker reads it, the TTY flag.

Reading real logs (framed and TTY output, no inspect per call) is tested against the engine
in tests/integration/test_log_cache_live.py.
"""

from __future__ import annotations

import pytest

from exporter.dockerhost import _unix_time
from exporter.dockerhost import details_of as _details


@pytest.mark.parametrize(("since", "sent"), [
    (1764504000.123456, "1764504000.123456"),
    (1.1234569, "1.123456"),  # floored, not rounded
    (1764504000.0, "1764504000.000000"),
    (1764504000, "1764504000.000000"),
    (1.5, "1.500000"),
])
def test_since_is_sent_with_microseconds_floored(since: float, sent: str) -> None:
    assert _unix_time(since) == sent


def test_every_microsecond_of_a_day_survives_the_float() -> None:
    # A datetime's timestamp() is a float; its microseconds must come out unchanged.
    base = 1764504000
    for micros in range(0, 1_000_000, 997):
        assert _unix_time(base + micros / 1e6) == f"{base}.{micros:06d}"


def test_inspect_details_say_whether_the_container_has_a_tty() -> None:
    raw = {"Id": "abc", "Config": {"Tty": True, "Env": ["A=1"]}, "State": {}}
    assert _details(raw).tty is True
    assert _details({"Id": "abc", "Config": {"Env": []}}).tty is False
    assert _details({"Id": "abc"}).tty is False
