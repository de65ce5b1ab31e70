"""A DockerHost answering `logs` the way Docker's json-file reader does, from plain data.

Docker 20.10 takes the last `tail` lines of the log file, then drops those stamped before
`since` (compared in nanoseconds), and prints each line after its RFC 3339 time with nine
fraction digits. Lines are kept in the order they were written, which is not always the
order of their times: stdout and stderr are stamped by separate readers. For unit tests of
the log cache only; nothing here tests Docker itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

from exporter.dockerhost import DockerHost

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def nanos(when: datetime) -> int:
    """Nanoseconds since the epoch of a datetime (which holds microseconds)."""
    delta = when - EPOCH
    return (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def docker_line(time_ns: int, body: str) -> str:
    """A line as `docker logs --timestamps` prints it."""
    seconds, fraction = divmod(time_ns, 10**9)
    when = EPOCH + timedelta(seconds=seconds)
    return f"{when.strftime('%Y-%m-%dT%H:%M:%S')}.{fraction:09d}Z {body}"


@dataclass
class Call:
    """One logs() call: the container, since in nanoseconds, tail, and lines returned."""

    container_id: str
    since_ns: int
    tail: int
    returned: int


class TailDocker(DockerHost):
    """Per container, (time in ns, body) in write order; logs() answers like Docker."""

    def __init__(self) -> None:
        super().__init__("unix:///nonexistent")
        self.logs_by_id: dict[str, list[tuple[int, str]]] = {}
        self.calls: list[Call] = []

    def write(self, container_id: str, when: datetime | int, *bodies: str) -> None:
        """Append lines stamped when (a datetime, or nanoseconds since the epoch)."""
        time_ns = nanos(when) if isinstance(when, datetime) else when
        self.logs_by_id.setdefault(container_id, []).extend((time_ns, b) for b in bodies)

    def logs(self, container_id: str, since: float, tail: int) -> list[str]:
        self.api_calls += 1
        # DockerHost.logs sends since floored to the microsecond; Docker compares in ns.
        micros = Decimal(repr(float(since))).quantize(Decimal("0.000001"), ROUND_FLOOR)
        since_ns = int(micros * 10**6) * 1000 if since > 0 else 0
        window = self.logs_by_id.get(container_id, [])[-tail:] if tail > 0 else []
        text = "\n".join(docker_line(t, body) for t, body in window if t >= since_ns)
        # As DockerHost.logs splits Docker's answer (a "\r" in a line splits it too).
        lines = text.splitlines()
        self.calls.append(Call(container_id, since_ns, tail, len(lines)))
        return lines
