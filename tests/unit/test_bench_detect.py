"""The detection bench's settling of the idle background and its alert naming, from plain data."""

from __future__ import annotations

import json

from bench.detect import alert_names, fingerprint, settle


def test_settle_waits_for_two_windows_that_agree() -> None:
    seen = iter([3.0, 2.0, 1.2, 1.15, 9.0])
    windows: list[float] = []

    def rate(seconds: float) -> float:
        windows.append(seconds)
        return next(seen)

    assert settle(rate, 5.0, timeout=60.0) == 1.15
    assert windows == [5.0] * 4  # the fifth window was never taken


def test_settle_tolerance_grows_with_the_rate() -> None:
    # 5 % of 4 cores is 0.2: 4.0 then 3.85 agree, where 0.05 cores alone would not.
    busy = iter([4.0, 3.85, 0.0])
    assert settle(lambda seconds: next(busy), 1.0, timeout=60.0) == 3.85
    low = iter([0.5, 0.4, 0.33, 0.3, 0.0])
    assert settle(lambda seconds: next(low), 1.0, timeout=60.0) == 0.3


def test_settle_gives_the_last_rate_after_the_timeout() -> None:
    # A background that never steadies: the wait ends, with the newest window's rate.
    swings = iter([5.0, 1.0, 5.0, 1.0])
    assert settle(lambda seconds: next(swings), 1.0, timeout=0.0) == 5.0


def test_alert_names_keep_the_component_and_drop_duplicates() -> None:
    down = {"alertname": "UltrabaseComponentDown", "component": "kong", "instance_id": "a"}
    unhealthy = {"alertname": "UltrabaseInstanceUnhealthy", "instance_id": "a"}
    prints = [fingerprint({"labels": down}), fingerprint({"labels": unhealthy}),
              json.dumps(dict(reversed(down.items())))]
    assert alert_names(prints) == ("UltrabaseComponentDown[kong]", "UltrabaseInstanceUnhealthy")
    assert alert_names([]) == ()
