"""The README documents every issue code: alert annotations link to these sections."""

from __future__ import annotations

from pathlib import Path

from exporter.issues import CATALOGUE

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_has_a_runbook_section_for_every_issue_code() -> None:
    readme = README.read_text()
    for code in CATALOGUE:
        assert f"\n### {code}\n" in readme, code
        assert f"| `{code}` |" in readme, code
