"""Auth service: the synthetic user test and the API keys' expiry."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import Metric

from exporter.checks.auth import AUTH_SERVICE
from exporter.checks.base import entries
from exporter.metrics.families import Refresh, Row, details, gauge, number
from exporter.metrics.snapshot import MetricsSnapshot


def families(snapshot: MetricsSnapshot, refresh: Refresh) -> list[Metric]:
    """ultrabase_auth_user_create_success and ultrabase_jwt_expiry_timestamp_seconds."""
    return [
        gauge("ultrabase_auth_user_create_success",
              refresh.cached("1 if the latest synthetic user test created and deleted its "
                             "admin user through the gateway, 0 if not; kept from the test "
                             "until the next one (no series before the first)"),
              ("instance_id",), _user_create(snapshot)),
        gauge("ultrabase_jwt_expiry_timestamp_seconds",
              refresh.cached("Unix time at which the instance's API key expires, by key "
                             "(anon, service_role)"),
              ("instance_id", "role"), _key_expiry(snapshot)),
    ]


def _user_create(snapshot: MetricsSnapshot) -> Iterator[Row]:
    for d in snapshot.diagnostics:
        if d.user_test is not None:
            yield (d.instance_id,), float(d.user_test.passed)


def _key_expiry(snapshot: MetricsSnapshot) -> Iterator[Row]:
    for d in snapshot.diagnostics:
        # The label is the key's name, not its role claim: a wrong claim is an issue, and
        # the series must stay the same when it is fixed.
        for role, key in entries(details(d, AUTH_SERVICE).get("keys")):
            expiry = number(key.get("exp"))
            if expiry is not None:
                yield (d.instance_id, role), expiry
