"""docs/runbook.md, generated from the issue catalogue: `python -m exporter.runbook [--check]`.

Alert annotations link to its sections (`runbook_base` + `#` + the code in lower case), so
the page must name every code of the catalogue and every alert-only entry below.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from exporter.issues import CATALOGUE, IssueSpec

RUNBOOK_PATH = Path(__file__).resolve().parents[1] / "docs" / "runbook.md"


@dataclass(frozen=True)
class AlertOnlyEntry:
    """A runbook entry for an alert that no issue code stands behind."""

    severity: str
    summary: str
    hint: str


# Alerts about the doctor itself: Prometheus raises them, no diagnostic does.
ALERT_ONLY: Mapping[str, AlertOnlyEntry] = {
    "DIAGNOSTICS_STALE": AlertOnlyEntry(
        "warning",
        "No fresh diagnostic of an instance for three sweep intervals (alert "
        "`UltrabaseDiagnosticsStale`)",
        "Check that the exporter's scheduler runs (`/healthz`, its log for \"scheduled job "
        "... failed\"), that Docker answers (`ultrabase_up`), and "
        "`ultrabase_sweep_duration_seconds`: a sweep that takes longer than the interval is "
        "coalesced, not overlapped."),
    "EXPORTER_DOWN": AlertOnlyEntry(
        "critical",
        "Prometheus cannot scrape the exporter (alert `UltrabaseExporterDown`); every "
        "per-instance alert of that host is held back meanwhile",
        "`systemctl status ultrabase-doctor` or `docker compose ps exporter`, then its log. "
        "The exporter exits at start on a config error (one line naming the key) or an "
        "unreadable registry."),
    "ACTION_API_DOWN": AlertOnlyEntry(
        "warning",
        "Prometheus cannot scrape the action API (alert `UltrabaseActionApiDown`): "
        "operations and Alertmanager-triggered repairs are unavailable; diagnostics still "
        "work",
        "Check the `actions` process and its log; a held operation lock is released when "
        "its process is gone."),
}

_HEADER = """\
# Runbook

Generated from `exporter/issues.py` by `python -m exporter.runbook`; do not edit by hand.
Alert annotations link to the sections below (`runbook_url`). Start with
`ultrabase-doctor diagnose ID` (or `GET /api/instances/ID/last-diagnostic`): the evidence
of each issue names the container, key fingerprint, role or path involved.

## Issue codes

Codes are stable API. Severity is the default; `repair` is the action id the action API
runs for it (`GET /api/instances/ID/repair-plan`, `POST /api/instances/ID/repair`).

| code | severity | meaning | repair |
|---|---|---|---|
"""


def _row(code: str, spec: IssueSpec) -> str:
    repair = f"`{spec.repair}`" if spec.repair else "—"
    return f"| `{code}` | {spec.severity} | {spec.summary} | {repair} |"


def _section(code: str, severity: str, summary: str, hint: str, repair: str | None) -> str:
    parts = [f"## {code}", "", f"*{severity}* — {summary}.", "", f"What to do: {hint}"]
    if repair:
        parts += ["", f"Repair action: `{repair}`."]
    return "\n".join(parts)


def render(catalogue: Mapping[str, IssueSpec] = CATALOGUE,
           alert_only: Mapping[str, AlertOnlyEntry] = ALERT_ONLY) -> str:
    """The whole page as markdown text."""
    rows = [_row(code, spec) for code, spec in catalogue.items()]
    sections = [_section(code, spec.severity, spec.summary, spec.hint, spec.repair)
                for code, spec in catalogue.items()]
    sections += [_section(code, entry.severity, entry.summary, entry.hint, None)
                 for code, entry in alert_only.items()]
    return _HEADER + "\n".join(rows) + "\n\n" + "\n\n".join(sections) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Write the page, or with --check exit 1 when the file on disk differs."""
    parser = argparse.ArgumentParser(prog="python -m exporter.runbook", description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    parser.add_argument("--path", type=Path, default=RUNBOOK_PATH)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.path.read_text() if args.path.exists() else ""
        if current != text:
            print(f"{args.path} is out of date: run python -m exporter.runbook",
                  file=sys.stderr)
            return 1
        return 0
    args.path.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
