"""The dashboard in a real headless Chromium (Debian's package, driven by Playwright), against a real
`strategy-executor serve` with its replica and sandbox: sign in, deploy through the form, watch it run
and trade on paper, stop it, see a compile error at its line, never see another user's bot, and have
a forged cross-site form refused. Screenshots at laptop and phone widths go to test-artifacts/dashboard/.
"""

from __future__ import annotations

import http.server
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.e2e.harness import PROJECT_ROOT, TOKEN, Service, free_port, service_env, wait_for
from tests.tenant.conftest import AUTH, JWT_SECRET, bearer

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = PROJECT_ROOT / "test-artifacts" / "dashboard"
LAPTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}
# Waits are generous (a busy machine) and end as soon as the page shows what is expected.
SLOW = 45_000

# Buys on its second run, so the wallet chart has a point before the trade and one after it.
STRATEGY = """\
STATE["runs"] = STATE.get("runs", 0) + 1
price = float(client.get_ticker()[0]["last_price"])
if STATE["runs"] == 2:
    order = client.create_order("buy", "market_order", "BTCUSDT", 0.01)
    print("bought BTC at", order["avg_price"])
print("run", STATE["runs"], "price", price)
RESULT = {"runs": STATE["runs"]}
"""
BROKEN = "x = 1\ny = 2\nz = (x +\nprint(z)\n"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's 'chromium' package (.ci/run does)")
    with sync_playwright() as playwright:
        # Playwright gives each launch a fresh, temporary user-data-dir (and each context its own
        # cookie jar): nothing from an earlier run can make a test pass. The browser is the system's;
        # nothing is downloaded.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def service(database_url: str, tmp_path: Path) -> Iterator[tuple[Service, str]]:
    port = free_port()
    env = service_env(database_url, jwt_secret=JWT_SECRET, port=port, min_execution_interval=1)
    process = Service("serve", env, tmp_path, "serve")
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if not process.alive():
            raise AssertionError(f"serve exited:\n{process.log()[-3000:]}")
        try:
            return httpx.get(f"{base}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, 90, "the service to become healthy", interval=0.25)
        yield process, base
    finally:
        process.stop()


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def signed_in(browser: Browser, base: str, user: str, viewport: dict[str, int]) -> tuple[BrowserContext, Page]:
    context = browser.new_context(viewport=viewport, base_url=base)
    page = context.new_page()
    page.goto("/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.fill("#token", AUTH.mint(user))
    page.click("button[type=submit]")
    expect(page.get_by_role("heading", name="Your bots")).to_be_visible()
    cookie = next(c for c in context.cookies() if c["name"] == "se_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # the page's scripts cannot read the session
    return context, page


class AttackerSite:
    """Another origin serving a page whose form posts to the dashboard on its own."""

    def __init__(self, target: str) -> None:
        page = (
            f'<!doctype html><form id="f" method="post" action="{target}">'
            '<input name="csrf" value="guessed"></form><script>document.getElementById("f").submit()</script>'
        ).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_user_deploys_watches_and_stops_a_bot_in_the_browser(browser: Browser, service: tuple[Service, str]) -> None:
    process, base = service
    # Bob's bot, deployed through the tenant API: Alice must never see it.
    bobs = httpx.post(
        f"{base}/api/bot/start",
        headers=bearer("bob"),
        json={"name": "bobs-private-bot", "code": "print('bob')\n", "executionInterval": 3600},
    )
    assert bobs.status_code == 201, bobs.text
    bob_id = bobs.json()["deploymentId"]

    context, page = signed_in(browser, base, "alice", LAPTOP)
    expect(page.get_by_text("No bots yet")).to_be_visible()
    assert "bobs-private-bot" not in page.content()

    # Deploy through the form.
    page.click("text=Deploy a bot")
    page.fill("#name", "btc-dip-buyer")
    page.fill("#interval", "1")
    page.fill("#code", STRATEGY)
    page.fill("#config", '{"note": "from the browser"}')
    page.click("button:has-text('Deploy and start')")
    expect(page.get_by_text("Deployed.")).to_be_visible()
    bot_id = page.url.rsplit("/bots/", 1)[1].split("?")[0]
    expect(page.get_by_role("heading", name="btc-dip-buyer")).to_be_visible()

    # It executes, and its output shows up on the page by itself (the live part refreshes).
    executions = page.locator("li.execution")
    expect(executions.first).to_be_visible(timeout=SLOW)
    expect(page.locator("#count-runs")).not_to_have_text("0", timeout=SLOW)
    page.locator("li.execution summary").last.click()
    expect(page.locator("li.execution pre.output").last).to_contain_text("run 1 price", timeout=SLOW)

    # The paper trade on run 2: an order, a BTC balance, and the wallet chart moves.
    expect(page.locator("table.orders")).to_contain_text("BTCUSDT", timeout=SLOW)
    expect(page.locator("#wallet table.balances")).to_contain_text("BTC", timeout=SLOW)
    chart = page.locator("svg.chart.line")
    expect(chart).to_be_visible(timeout=SLOW)
    wait_for(
        lambda: int(chart.get_attribute("data-points") or 0) >= 3, SLOW / 1000, "three wallet values", interval=0.5
    )
    first, last = chart.get_attribute("data-first"), chart.get_attribute("data-last")
    assert first is not None and last is not None and first != last, (first, last)
    expect(page.locator("#state")).to_contain_text('"runs"')
    shot(page, "laptop-bot")

    page.goto("/")
    card = page.locator(f"li.bot[data-bot='{bot_id}']")
    expect(card).to_contain_text("btc-dip-buyer")
    expect(card.locator("svg.chart.bars rect.bar.ok").first).to_be_visible()
    assert "bobs-private-bot" not in page.content()
    shot(page, "laptop-bots")

    # Another user's bot is nowhere, not even by its id.
    page.goto(f"/bots/{bob_id}")
    expect(page.get_by_role("heading", name="No such bot")).to_be_visible()
    page.goto(f"/deploy?bot={bob_id}")
    expect(page.get_by_role("heading", name="No such bot")).to_be_visible()

    # A forged form on another site (cross-site: another host; and same-site: another port) is refused.
    for host in ("localhost", "127.0.0.1"):
        attacker = AttackerSite(f"{base}/bots/{bot_id}/delete")
        try:
            forged = context.new_page()
            forged.goto(f"http://{host}:{attacker.port}/")
            forged.wait_for_url(re.compile(rf"{re.escape(base)}/bots/"), timeout=SLOW)
            expect(forged.get_by_role("heading", name="Refused")).to_be_visible()
            forged.close()
        finally:
            attacker.close()
    status = httpx.get(f"{base}/api/bot/deployments/{bot_id}", headers=bearer("alice")).json()["status"]
    assert status != "deleting"

    # A compile error is shown at its line, and what was typed is kept.
    page.goto("/deploy")
    page.fill("#name", "broken")
    page.fill("#interval", "abc")
    page.fill("#code", BROKEN)
    page.click("button:has-text('Deploy and start')")
    expect(page.locator("#form-errors")).to_contain_text("a whole number of seconds")
    page.fill("#interval", "5")
    page.click("button:has-text('Deploy and start')")
    expect(page.locator("#code-error")).to_be_visible()
    bad = page.locator("#bad-line")
    expect(bad).to_contain_text("z = (x +")
    assert bad.locator(".ln").inner_text().strip() == "3"
    expect(page.locator("#code")).to_have_value(BROKEN)
    shot(page, "laptop-compile-error")

    # Phone width: the same pages, one column.
    phone = browser.new_context(viewport=PHONE, base_url=base, storage_state=context.storage_state())
    small = phone.new_page()
    small.goto(f"/bots/{bot_id}")
    expect(small.locator("svg.chart.line")).to_be_visible()
    width = small.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the bot page scrolls sideways on a phone ({width}px)"
    shot(small, "phone-bot")
    small.goto("/")
    shot(small, "phone-bots")
    small.goto("/deploy")
    shot(small, "phone-deploy")
    phone.close()

    # Stop it: the page says so, and the runs stop.
    page.goto(f"/bots/{bot_id}")
    page.click("button[data-action=stop]")
    expect(page.get_by_text("Stopped. A run in progress finishes.")).to_be_visible()
    expect(page.locator("#bot-status")).to_have_text("stopped", timeout=SLOW)
    expect(page.locator("button[data-action=start]")).to_be_visible()
    assert httpx.get(f"{base}/api/bot/deployments/{bot_id}", headers=bearer("alice")).json()["desiredState"] == (
        "stopped"
    )

    # The service goes away: the open page says it cannot be reached.
    process.stop()
    expect(page.locator("#offline")).to_be_visible(timeout=SLOW)
    shot(page, "laptop-offline")
    context.close()


def test_bob_sees_only_his_own(browser: Browser, service: tuple[Service, str]) -> None:
    _, base = service
    for user, name in (("alice", "alices-bot"), ("bob", "bobs-bot")):
        response = httpx.post(
            f"{base}/api/bot/start",
            headers=bearer(user),
            json={"name": name, "code": "print(1)\n", "executionInterval": 3600},
        )
        assert response.status_code == 201
    context, page = signed_in(browser, base, "bob", PHONE)
    expect(page.locator("li.bot")).to_have_count(1)
    expect(page.locator("li.bot")).to_contain_text("bobs-bot")
    assert "alices-bot" not in page.content()
    # The executor token opens nothing here: the dashboard only takes a user's JWT.
    page.goto("/")
    context.clear_cookies()
    page.goto("/")
    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    expect(page.get_by_role("alert")).to_contain_text("Sign-in refused")
    context.close()
