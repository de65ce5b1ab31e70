"""The console in a real browser (Debian's headless Chromium driven by Playwright) over the
shared live fleet, one instance broken with `auth-db-password`.

One browser, three signed-in contexts:
- an admin signs in, runs a diagnostic from the fleet and sees it complete with the root
  cause, asks again while it runs and is told so, sees the broken instance lead the fleet
  with its root cause, runs the repair and follows its steps live to the end, and sees the
  instance healthy at the next diagnostic;
- a viewer sees no action button;
- a token scoped to the other instance sees only that one (the broken one is not found);
- a form post without the form token is refused and starts nothing.

Screenshots of the fleet, the instance and the operation go to $UBD_SCREENSHOTS when set
(scripts/screenshots.sh sets it to docs/img), else to the test's temporary directory.
Nothing is asserted on pixels.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from fleet.fleet import Fleet
from tests.integration.conftest import FleetFactory
from tests.integration.test_actions_api_live import free_port

pytestmark = [pytest.mark.integration, pytest.mark.fleets(2)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
FAULT = "auth-db-password"
ROOT_CAUSE = "DB_ROLE_PASSWORD_MISMATCH"
# A diagnostic or a repair on a loaded 2-core host: generous, never a sleep.
SLOW_MS = 150_000

playwright_api = pytest.importorskip("playwright.sync_api")


@dataclass
class Console:
    """The action API process serving the console over the fleet."""

    url: str
    config: Path
    fleet: Fleet
    broken: str
    healthy: str
    admin: str
    viewer: str
    scoped: str
    shots: Path
    log: Path


def token_entry(name: str, token: str, role: str, instances: list[str]) -> dict[str, Any]:
    return {"name": name, "role": role, "instances": instances,
            "token_sha256": hashlib.sha256(token.encode()).hexdigest()}


@pytest.fixture(scope="module")
def console(fleet_factory: FleetFactory, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Console]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    fleet = fleet_factory(2)
    broken, healthy = fleet.ids
    work = tmp_path_factory.mktemp("console")
    admin = fleet.up_result.admin_token if fleet.up_result else ""
    assert admin
    viewer, scoped = "view-" + secrets.token_hex(16), "scoped-" + secrets.token_hex(16)
    config = yaml.safe_load(fleet.config_path.read_text())
    config["api"]["tokens"] += [token_entry("console-viewer", viewer, "viewer", ["*"]),
                                token_entry("console-scoped", scoped, "operator", [healthy])]
    port = free_port()
    config.update({
        "store": {"path": str(work / "store.sqlite3")},
        # Tight enough to show a rate limit, loose enough for the repair to come first.
        "diagnostics": {"timeout_seconds": 10, "rate_limit_seconds": 20,
                        # Auth's crash-loop lines leave the logs check's window soon after
                        # the repair, so "healthy" comes within the test's time.
                        "log_window_seconds": 30},
        "actions": {"host": "127.0.0.1", "port": port, "backups_dir": str(work / "backups"),
                    "stop_timeout_seconds": 5, "health_timeout_seconds": 90},
    })
    path = work / "doctor.yaml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    shots = Path(os.environ.get("UBD_SCREENSHOTS") or work / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    fleet.break_(broken, FAULT)
    log = work / "actions.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "actions.cli", "--log-level", "INFO", "actions",
             "--config", str(path)], stdout=out, stderr=out,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the action API did not come up"
            time.sleep(0.2)
        yield Console(url, path, fleet, broken, healthy, admin, viewer, scoped, shots, log)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        # The repair set the password right; the fault's undo finds nothing to do.
        fleet.heal(broken, FAULT)
        assert code == 0, log.read_text()[-3000:]


@pytest.fixture(scope="module")
def browser(console: Console) -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def signed_in(browser: Any, console: Console, token: str) -> Any:
    """A fresh context (own cookies) signed in with `token`; its page on the fleet."""
    context = browser.new_context(viewport={"width": 1280, "height": 900},
                                  locale="en-US")
    page = context.new_page()
    page.goto(console.url + "/")
    assert "/login" in page.url
    page.fill("#credential", token)
    page.click("#login button[type=submit]")
    page.wait_for_selector("#cards")
    return page


def test_operator_flow_in_the_browser(browser: Any, console: Console) -> None:
    page = signed_in(browser, console, console.admin)
    broken = f'article.card[data-instance="{console.broken}"]'

    # Run a diagnostic from the broken instance's card; the page follows it to the end.
    page.click(f'{broken} button[data-action="diagnose"]')
    page.wait_for_selector("#diagnosing")
    assert "Diagnostic started" in page.inner_text("main")
    # A second click while it runs is told so, and joins the same run.
    page.click('#actions button[data-action="diagnose"]')
    assert "already running" in page.inner_text("main")
    page.wait_for_selector("#root-cause", timeout=SLOW_MS)
    assert ROOT_CAUSE in page.inner_text("#root-cause")
    assert page.inner_text("#status") == "unhealthy"
    assert page.locator("#checks tbody tr").count() >= 7
    page.screenshot(path=str(console.shots / "console-instance.png"), full_page=True)

    # The healthy one too, so the fleet shows both; then the fleet, worst first.
    page.goto(console.url + f"/instances/{console.healthy}")
    page.click('#actions button[data-action="diagnose"]')
    page.wait_for_selector("#diagnosing", state="detached", timeout=SLOW_MS)
    page.goto(console.url + "/")
    cards = page.locator("article.card")
    assert cards.first.get_attribute("data-instance") == console.broken
    assert ROOT_CAUSE in page.inner_text(f"{broken} .rootcause")
    page.screenshot(path=str(console.shots / "console-fleet.png"), full_page=True)

    # The repair: its plan, then its steps live until it ends.
    page.goto(console.url + f"/instances/{console.broken}/repair")
    assert "sync_db_role_passwords:db" in page.inner_text("#repair-form")
    with page.expect_navigation(timeout=SLOW_MS):
        page.click('button[data-action="run-repair"]')
    assert "/operations/" in page.url
    page.wait_for_selector('.op-body[data-finished="true"]', timeout=SLOW_MS)
    assert page.inner_text("#op-status") == "succeeded", page.inner_text("#operation")
    steps = page.locator("#steps tr.step").all_inner_texts()
    assert any("repair sync_db_role_passwords:db" in s for s in steps), steps
    assert any("repair restart_component:auth" in s for s in steps), steps
    page.screenshot(path=str(console.shots / "console-operation.png"), full_page=True)

    # The instance turns healthy: diagnosed again (each run once the rate limit allows)
    # until the log window no longer holds auth's crash-loop lines.
    page.click("#back-to-instance")
    deadline = time.monotonic() + SLOW_MS / 1000
    while True:
        page.click('#actions button[data-action="diagnose"]')
        if "Rate limited" not in page.inner_text("main"):
            # The page reloads itself once the run has ended.
            page.wait_for_selector("#diagnosing", state="detached", timeout=SLOW_MS)
            if page.inner_text("#status") == "healthy":
                break
        assert time.monotonic() < deadline, page.inner_text("#diagnostic")
        page.wait_for_timeout(2000)
    page.context.close()


def test_viewer_has_no_action_buttons(browser: Any, console: Console) -> None:
    page = signed_in(browser, console, console.viewer)
    assert page.locator("article.card").count() == 2
    assert page.locator("[data-action]").count() == 0
    page.goto(console.url + f"/instances/{console.broken}")
    assert page.locator("[data-action]").count() == 0
    assert page.locator("#actions").count() == 0
    # Reading is allowed: the logs with the plan's filters (auth's crash loop is in them).
    page.goto(console.url + f"/instances/{console.broken}/logs?service=auth&level=error"
              "&range=1h")
    assert "password authentication failed" in page.inner_text("#log-entries")
    page.context.close()


def shell(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    """The console script, with the token (if any) in the environment only."""
    env = {k: v for k, v in os.environ.items() if k != "ULTRABASE_DOCTOR_TOKEN"}
    if token is not None:
        env["ULTRABASE_DOCTOR_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "actions.cli", *args], capture_output=True,
                          text=True, timeout=300, env=env, check=False)


def test_the_same_actions_from_the_shell(console: Console) -> None:
    remote = shell("backup", console.healthy, "--url", console.url, "--db-dump",
                   token=console.admin)
    assert remote.returncode == 0, remote.stderr
    assert "[ok] backup" in remote.stdout and remote.stdout.splitlines()[-1].startswith(
        "succeeded")
    refused = shell("restart", console.healthy, "--url", console.url,
                    "--component", "nope", token=console.scoped)
    assert refused.returncode == 2 and "unknown component" in refused.stderr
    hidden = shell("backup", console.broken, "--url", console.url,
                   token=console.scoped)
    assert hidden.returncode == 2 and "404" in hidden.stderr
    # On the host: the same store, runner and lock, audited as the local user.
    local = shell("backup", console.healthy, "--config", str(console.config))
    assert local.returncode == 0, local.stderr
    listed = shell("backup", console.healthy, "--list", "--url", console.url,
                   token=console.viewer)
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) >= 2
    audit = httpx.get(f"{console.url}/api/audit?instance_id={console.healthy}&action=backup",
                      headers={"Authorization": f"Bearer {console.admin}"}, timeout=30)
    who = {e["who"] for e in audit.json()["entries"]}
    assert "fleet-admin" in who and any(w.startswith("local:") for w in who), who
    for text in (remote.stdout, remote.stderr, local.stdout, local.stderr):
        assert console.admin not in text


def test_scoped_token_sees_only_its_instance(browser: Any, console: Console) -> None:
    page = signed_in(browser, console, console.scoped)
    ids = [c.get_attribute("data-instance") for c in page.locator("article.card").all()]
    assert ids == [console.healthy]
    response = page.goto(console.url + f"/instances/{console.broken}")
    assert response is not None and response.status == 404
    page.context.close()


def test_a_form_post_without_the_token_is_refused(browser: Any, console: Console) -> None:
    page = signed_in(browser, console, console.admin)
    before = page.request.get(console.url + f"/instances/{console.healthy}/audit").text()
    refused = page.request.post(console.url + f"/instances/{console.healthy}/safe-restart",
                                form={"anything": "x"})
    assert refused.status == 400
    assert "form token" in refused.text()
    after = page.request.get(console.url + f"/instances/{console.healthy}/audit").text()
    assert after.count("safe_restart") == before.count("safe_restart")
    page.context.close()
