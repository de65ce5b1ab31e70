"""Human-readable text for the terminal: diagnostics and instance lists."""

from __future__ import annotations

from exporter.diagnostic import Diagnostic, RecentEvent, RootCause
from exporter.discovery import Discovery

_MARK = {"ok": "ok", "degraded": "WARN", "failed": "FAIL", "skipped": "skip"}
# Root causes that are a state of the instance's life, not a fault (exporter.lifecycle).
_STATES = {"INSTANCE_CREATING": "being created", "INSTANCE_STOPPED": "stopped by its owner",
           "INSTANCE_NOT_STARTED": "never started"}


def render_diagnostic(diagnostic: Diagnostic, *, cached: bool = False,
                      rate_limited: bool = False) -> str:
    """Root cause and its hint first, then a line per check, then every issue."""
    d = diagnostic
    lines = [_headline(d, cached=cached, rate_limited=rate_limited)]
    if d.root_cause:
        lines += ["", *_root_cause(d.root_cause)]
    lines += ["", f"{'CHECK':<22} {'STATUS':<6} {'TIME':>7}  ISSUES"]
    for name, result in d.results.items():
        codes = ", ".join(sorted({i.code for i in result.issues})) or "-"
        lines.append(f"{name:<22} {_MARK[result.status]:<6} {result.duration_seconds:>6.2f}s"
                     f"  {codes}")
    if d.issues:
        lines += ["", "Issues:"]
        lines += [f"  {i.severity.upper():<8} {i.code}{_where(i.component)} ({i.check}): "
                  f"{i.message}" for i in d.issues]
    if d.recent_events:
        lines += ["", "Recent events (over, shown by live checks):"]
        lines += [_event(e) for e in d.recent_events]
    return "\n".join(lines) + "\n"


def _headline(d: Diagnostic, *, cached: bool, rate_limited: bool) -> str:
    state = "healthy" if d.healthy else "UNHEALTHY"
    if d.root_cause and d.root_cause.issue.code in _STATES:
        state = _STATES[d.root_cause.issue.code] + ("" if d.healthy else ", UNHEALTHY")
    notes = [f"{d.duration_seconds:.1f}s", d.timestamp.strftime("%Y-%m-%d %H:%M:%SZ")]
    if cached:
        notes.append(f"cached, {d.age_seconds():.0f}s old")
    if rate_limited:
        notes.append("rate limited")
    return f"Instance {d.instance_id}: {state} ({', '.join(notes)})"


def _root_cause(root: RootCause) -> list[str]:
    """The root cause, its hint and repair, what it explains and the chain to its effects."""
    rc = root.issue
    lines = [f"Root cause: {rc.code}{_where(rc.component)}: {rc.message}", f"  Hint: {rc.hint}"]
    if rc.repair:
        lines.append(f"  Repair: {rc.repair}")
    if root.explains:
        explained = sorted({f"{i.code}" + (f"[{i.component}]" if i.component else "")
                            for i in root.explains})
        lines.append(f"  Explains: {', '.join(explained)}")
    if len(root.chain) > 1:
        steps = [str(step.get("link") or step.get("component") or "instance")
                 + f" ({step.get('code')})" for step in root.chain]
        lines.append(f"  Chain: {' -> '.join(steps)}")
    return lines


def _event(event: RecentEvent) -> str:
    count = f" x{event.count}" if event.count is not None else ""
    return (f"  {event.last_seen or '-'} {event.code}{_where(event.component)}{count}: "
            f"{event.excerpt or ''}").rstrip()


def _where(component: str | None) -> str:
    return f" [{component}]" if component else ""


def render_instances(found: Discovery) -> str:
    """A table of instances, components and problems."""
    lines: list[str] = []
    if not found.docker_ok:
        lines.append(f"Docker unreachable: {found.docker_error}")
    if not found.instances:
        lines.append("No instances found.")
    else:
        lines.append(f"{'ID':<12} {'NAME':<24} {'SOURCE':<9} {'RUNNING':<8} {'GATEWAY':<24} "
                     "PROBLEMS")
    for inst in found.instances.values():
        running = sum(1 for c in inst.components.values() if c.running)
        count = f"{running}/{len(inst.components)}" if inst.runtime_known else "?"
        codes = ",".join(sorted({p.code for p in inst.problems})) or "-"
        lines.append(f"{inst.id:<12} {inst.name[:24]:<24} {inst.source:<9} {count:<8} "
                     f"{(inst.endpoints.gateway_url or '-'):<24} {codes}")
        down = [f"{c.name}={c.state}" for c in inst.components.values()
                if inst.runtime_known and not c.running]
        if down:
            said = (f" (registry status: {inst.registry.status})" if inst.registry.status
                    else "")
            lines.append(f"{'':<12} not running{said}: {', '.join(down)}")
        for p in inst.problems:
            lines.append(f"{'':<12} {p.severity.upper()} {p.code}: {p.message}")
    for p in found.problems:
        lines.append(f"{p.severity.upper()} {p.code}: {p.message}")
    return "\n".join(lines) + "\n"
