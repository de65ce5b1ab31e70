"""The manual: the generated runbook is current and every page the README links exists."""

from __future__ import annotations

import re
from pathlib import Path

from exporter import runbook
from exporter.issues import CATALOGUE

ROOT = Path(__file__).resolve().parents[2]


def test_runbook_page_is_generated_from_the_current_catalogue() -> None:
    assert runbook.RUNBOOK_PATH.read_text() == runbook.render()
    assert runbook.main(["--check"]) == 0


def test_runbook_check_fails_on_a_stale_page(tmp_path: Path) -> None:
    stale = tmp_path / "runbook.md"
    stale.write_text(runbook.render().replace("## CONFIG_DRIFT\n", "## CONFIG_DRIFTED\n"))
    assert runbook.main(["--check", "--path", str(stale)]) == 1
    assert runbook.main(["--path", str(stale)]) == 0
    assert runbook.main(["--check", "--path", str(stale)]) == 0


def test_runbook_has_a_section_and_a_row_for_every_issue_code() -> None:
    page = runbook.render()
    for code, spec in CATALOGUE.items():
        assert f"\n## {code}\n" in page, code
        assert f"| `{code}` | {spec.severity} |" in page, code
        if spec.repair:
            assert f"Repair action: `{spec.repair}`." in page, code
    for code in runbook.ALERT_ONLY:
        assert f"\n## {code}\n" in page, code


def test_readme_links_only_to_pages_that_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(((?:docs|deploy)/[^)#]+)", readme)
    assert len(links) >= 9
    for link in links:
        assert (ROOT / link).is_file(), link


def test_readme_stays_a_front_door() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250
