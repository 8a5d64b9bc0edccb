"""The dashboard over HTTP: sign-in cookie, CSRF and cross-site refusals, the CSP, form errors as
pages, and no page of one user's bot for another. (tests/dashboard/test_browser.py drives Chromium.)"""

from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient

from api.security_headers import CONTENT_SECURITY_POLICY
from tests.api.conftest import BuildClient
from tests.tenant.conftest import AUTH, JWT_SECRET, bearer, start_body

BASE = "http://testserver"


@pytest.fixture
def anonymous(build_client: BuildClient) -> TestClient:
    client = build_client(jwt_secret=JWT_SECRET)
    client.headers.pop("Authorization")
    return client


def sign_in(client: TestClient, user: str) -> str:
    response = client.post("/signin", data={"token": AUTH.mint(user)}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return csrf_of(client.get("/").text)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def deploy_bot(client: TestClient, user: str, name: str = "bot-1") -> str:
    response = client.post("/api/bot/start", headers=bearer(user), json=start_body(name=name))
    assert response.status_code == 201
    return str(response.json()["deploymentId"])


def test_sign_in_sets_a_strict_http_only_cookie(anonymous: TestClient) -> None:
    page = anonymous.get("/")
    assert page.status_code == 200 and 'name="token"' in page.text
    response = anonymous.post("/signin", data={"token": AUTH.mint("alice")}, follow_redirects=False)
    cookie = response.headers["set-cookie"]
    assert "se_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "alice" in anonymous.get("/").text


@pytest.mark.parametrize("token", ["", "junk", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9."])
def test_a_bad_token_gets_a_message_on_the_sign_in_page(anonymous: TestClient, token: str) -> None:
    response = anonymous.post("/signin", data={"token": token})
    assert response.status_code == 401
    assert "text/html" in response.headers["content-type"]
    assert "Sign-in refused" in response.text and "se_session" not in response.headers.get("set-cookie", "")


def test_every_page_carries_the_strict_csp_and_loads_only_own_assets(anonymous: TestClient) -> None:
    csrf = sign_in(anonymous, "alice")
    bot = deploy_bot(anonymous, "alice")
    for path in ("/", f"/bots/{bot}", "/deploy", f"/deploy?bot={bot}", "/docs", "/ui/bots", f"/ui/bots/{bot}"):
        response = anonymous.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "default-src 'none'" in CONTENT_SECURITY_POLICY and "script-src 'self'" in CONTENT_SECURITY_POLICY
        html = response.text
        assert not re.search(r"<script(?![^>]*\bsrc=\"/static/)", html), path  # no inline script
        assert " style=" not in html and "<style" not in html, path  # no inline style
        assert not re.search(r'(src|href)="(https?:)?//', html), path  # nothing from elsewhere
    for asset in ("/static/app.js", "/static/app.css", "/static/favicon.svg"):
        assert anonymous.get(asset).status_code == 200
    assert csrf


def test_forms_need_the_sessions_csrf_token(anonymous: TestClient) -> None:
    csrf = sign_in(anonymous, "alice")
    bot = deploy_bot(anonymous, "alice")
    missing = anonymous.post(f"/bots/{bot}/stop", data={}, follow_redirects=False)
    assert missing.status_code == 403 and "security token" in missing.text
    forged = anonymous.post(f"/bots/{bot}/stop", data={"csrf": "0" * 64}, follow_redirects=False)
    assert forged.status_code == 403
    # Another user's session token is no good here either.
    other = TestClient(anonymous.app)
    other_csrf = sign_in(other, "bob")
    assert anonymous.post(f"/bots/{bot}/stop", data={"csrf": other_csrf}).status_code == 403
    assert anonymous.get(f"/api/bot/deployments/{bot}", headers=bearer("alice")).json()["desiredState"] == "running"
    done = anonymous.post(f"/bots/{bot}/stop", data={"csrf": csrf}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == f"/bots/{bot}?notice=stopped"
    assert anonymous.get(f"/api/bot/deployments/{bot}", headers=bearer("alice")).json()["desiredState"] == "stopped"


def test_a_cross_site_post_is_refused_even_with_the_token(anonymous: TestClient) -> None:
    csrf = sign_in(anonymous, "alice")
    bot = deploy_bot(anonymous, "alice")
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}):
        response = anonymous.post(f"/bots/{bot}/delete", data={"csrf": csrf}, headers=headers)
        assert response.status_code == 403, headers
        assert "another site" in response.text
    same_site = anonymous.post(f"/bots/{bot}/run", data={"csrf": csrf}, headers={"Origin": BASE})
    assert same_site.status_code == 200  # followed the redirect to the bot's page
    assert anonymous.get(f"/api/bot/deployments/{bot}", headers=bearer("alice")).json()["status"] != "deleting"


def test_bad_form_input_gets_messages_on_the_page(anonymous: TestClient) -> None:
    csrf = sign_in(anonymous, "alice")
    form = {"csrf": csrf, "name": "x", "code": "print(1)\n", "interval": "abc", "config": "[", "exchange": "paper"}
    response = anonymous.post("/deploy", data=form)
    assert response.status_code == 422 and "text/html" in response.headers["content-type"]
    assert "a whole number of seconds" in response.text and "not valid JSON" in response.text
    assert 'value="abc"' in response.text  # what was typed is kept
    for fields, message in [
        ({"interval": "0"}, "between"),
        ({"config": "[1]"}, "JSON object"),
        ({"name": ""}, "give the bot a name"),
        ({"exchange": "coindcx"}, "required with exchange"),
        ({"exchange": "mars"}, "choose paper or coindcx"),
        ({"bot": "not an id!"}, "not a bot id"),
    ]:
        body = {**form, "interval": "5", "config": "{}", **fields}
        page = anonymous.post("/deploy", data=body)
        assert page.status_code == 422, fields
        assert message in page.text, (fields, page.text[-2000:])


def test_deploying_to_a_bot_that_is_not_yours_is_404_with_the_form_kept(anonymous: TestClient) -> None:
    """An unknown bot id, or another user's, is a 404 as everywhere else, not a 422 for the input:
    the form comes back with what was typed, to keep it for a new bot."""
    bobs = deploy_bot(anonymous, "bob")
    csrf = sign_in(anonymous, "alice")
    form = {"csrf": csrf, "name": "x", "code": "print(2)\n", "interval": "5", "config": "{}", "exchange": "paper"}
    for bot in ("unknown-bot", bobs):
        page = anonymous.post("/deploy", data={**form, "bot": bot})
        assert page.status_code == 404, (bot, page.text[-2000:])
        assert "text/html" in page.headers["content-type"]
        assert "you have no bot with this id" in page.text and "print(2)" in page.text
        # As the form's own page and the APIs answer for either id.
        assert anonymous.get("/deploy", params={"bot": bot}).status_code == 404
    assert anonymous.get(f"/api/bot/deployments/{bobs}", headers=bearer("bob")).json()["code"] != "print(2)\n"


def test_a_compile_error_is_shown_at_its_line(anonymous: TestClient) -> None:
    csrf = sign_in(anonymous, "alice")
    code = "x = 1\ny = 2\nimport os\nprint(x)\n"
    form = {"csrf": csrf, "name": "bad", "code": code, "interval": "5", "config": "{}", "exchange": "paper"}
    page = anonymous.post("/deploy", data=form)
    assert page.status_code == 422
    assert re.search(r'<li class="bad-line" id="bad-line"><span class="ln">3</span><code>import os</code>', page.text)
    assert "Line 3" in page.text


def test_deploying_through_the_form_redirects_to_the_new_bot(anonymous: TestClient) -> None:
    csrf = sign_in(anonymous, "alice")
    form = {"csrf": csrf, "name": "fresh", "code": "print(1)\n", "interval": "5", "config": '{"a": 1}'}
    response = anonymous.post("/deploy", data={**form, "exchange": "paper"}, follow_redirects=False)
    assert response.status_code == 303
    bot = response.headers["location"].split("/bots/")[1].split("?")[0]
    detail = anonymous.get(f"/api/bot/deployments/{bot}", headers=bearer("alice")).json()
    assert detail["name"] == "fresh" and detail["config"] == {"a": 1} and detail["executionInterval"] == 5


def test_another_users_bot_is_nowhere(anonymous: TestClient) -> None:
    alices = deploy_bot(anonymous, "alice", name="alices-secret-bot")
    csrf = sign_in(anonymous, "bob")
    assert "alices-secret-bot" not in anonymous.get("/").text
    assert "alices-secret-bot" not in anonymous.get("/ui/bots").text
    assert anonymous.get(f"/bots/{alices}").status_code == 404
    assert anonymous.get(f"/ui/bots/{alices}").status_code == 404
    assert anonymous.get(f"/deploy?bot={alices}").status_code == 404
    for action in ("run", "stop", "start", "delete"):
        assert anonymous.post(f"/bots/{alices}/{action}", data={"csrf": csrf}).status_code == 404, action
    form = {"csrf": csrf, "name": "x", "code": "print(1)\n", "interval": "5", "config": "{}", "exchange": "paper"}
    assert anonymous.post("/deploy", data={**form, "bot": alices}).status_code == 404
    detail = anonymous.get(f"/api/bot/deployments/{alices}", headers=bearer("alice")).json()
    assert detail["desiredState"] == "running" and detail["generation"] == 1


def test_signed_out_pages_and_fragments(anonymous: TestClient) -> None:
    assert anonymous.get("/ui/bots").status_code == 401
    assert anonymous.get("/bots/x", follow_redirects=False).status_code == 303
    csrf = sign_in(anonymous, "alice")
    out = anonymous.post("/signout", data={"csrf": csrf}, follow_redirects=False)
    assert out.status_code == 303 and 'se_session=""' in out.headers["set-cookie"]


def test_docs_render_every_route_without_scripts(anonymous: TestClient) -> None:
    page = anonymous.get("/docs")
    assert page.status_code == 200
    for route in ("POST /api/bot/start", "GET /api/bot/deployments/{deployment_id}", "POST /strategies/deploy"):
        assert route in page.text, route
    assert "tenantJwt" in page.text and "DeploymentDetail" in page.text


def test_a_halted_bot_shows_why_when_it_resumes_and_a_start_button(anonymous: TestClient, pg_conn: object) -> None:
    bot = deploy_bot(anonymous, "alice")
    risk = {"max_daily_loss": 50, "on_breach": "pause"}
    response = anonymous.post("/api/bot/start", headers=bearer("alice"), json=start_body(deploymentId=bot, risk=risk))
    assert response.status_code == 200, response.text
    assert response.json()["risk"] == {**risk, "currency": "USDT"}
    pg_conn.execute(  # type: ignore[attr-defined]
        "INSERT INTO strategy_status (strategy_id, status, observed_generation, halted_at, halt_limit, halt_value, "
        "halt_threshold, resume_at, status_reason) VALUES (%s, 'halted', 2, now(), 'max_daily_loss', 61.5, 50, "
        "'2026-11-28T00:00:00Z', 'halted by max_daily_loss: the loss today is 61.5 USDT')",
        (bot,),
    )
    csrf = sign_in(anonymous, "alice")
    page = anonymous.get(f"/bots/{bot}").text
    assert "halted by max_daily_loss: the loss today is 61.5 USDT" in page
    assert 'id="halt-resume"' in page and "resumes" in page
    assert 'data-action="start"' in page and "max_daily_loss 50" in page
    # Start is the person's explicit answer to the halt: on record as started_at.
    assert anonymous.post(f"/bots/{bot}/start", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    (started_at,) = pg_conn.execute(  # type: ignore[attr-defined]
        "SELECT started_at FROM strategies WHERE strategy_id = %s", (bot,)
    ).fetchone()
    assert started_at is not None


def test_run_now_joins_a_pending_run_and_a_halted_bot_says_why(anonymous: TestClient, pg_conn: object) -> None:
    bot = deploy_bot(anonymous, "alice")
    csrf = sign_in(anonymous, "alice")
    first = anonymous.post(f"/bots/{bot}/run", data={"csrf": csrf}, follow_redirects=False)
    assert first.headers["location"] == f"/bots/{bot}?notice=run"
    again = anonymous.post(f"/bots/{bot}/run", data={"csrf": csrf}, follow_redirects=False)
    assert again.headers["location"] == f"/bots/{bot}?notice=run_pending"
    assert "already waiting" in anonymous.get(again.headers["location"]).text
    pg_conn.execute(  # type: ignore[attr-defined]
        "INSERT INTO strategy_status (strategy_id, status, observed_generation, halted_at, halt_limit, halt_value, "
        "halt_threshold, resume_at, status_reason) VALUES (%s, 'halted', 1, '2026-11-27T10:00:00Z', "
        "'max_daily_loss', 61.5, 50, '2030-01-02T00:00:00Z', 'halted by max_daily_loss: the loss today is 61.5 USDT')",
        (bot,),
    )
    halted = anonymous.post(f"/bots/{bot}/run", data={"csrf": csrf}, follow_redirects=False)
    assert halted.status_code == 409
    assert "halted by max_daily_loss: the loss today is 61.5 USDT" in halted.text
    assert "resumes by itself at 2030-01-02T00:00:00Z, or at once with Start on this page" in halted.text


def test_run_now_of_a_bot_halted_without_its_figures_says_so(anonymous: TestClient, pg_conn: object) -> None:
    bot = deploy_bot(anonymous, "alice")
    csrf = sign_in(anonymous, "alice")
    pg_conn.execute(  # type: ignore[attr-defined]
        "INSERT INTO strategy_status (strategy_id, status, observed_generation, halted_at)"
        " VALUES (%s, 'halted', 1, '2026-11-27T10:00:00Z')",
        (bot,),
    )
    halted = anonymous.post(f"/bots/{bot}/run", data={"csrf": csrf}, follow_redirects=False)
    assert halted.status_code == 409
    assert "no limit is on record" in halted.text and "until Start on this page resumes it" in halted.text
    assert anonymous.get(f"/bots/{bot}").status_code == 200


def test_every_action_on_a_bot_being_deleted_says_so(anonymous: TestClient, pg_conn: object) -> None:
    """A page left open while the bot is deleted (another tab, the API) still offers its buttons:
    pressing one says what is true, a 409 as the APIs answer, not "no such bot"."""
    bot = deploy_bot(anonymous, "alice", name="leaving")
    csrf = sign_in(anonymous, "alice")
    deleting = anonymous.delete(f"/api/bot/deployments/{bot}", headers=bearer("alice")).json()
    for action, what in (("run", "run"), ("stop", "stopped"), ("start", "started")):
        page = anonymous.post(f"/bots/{bot}/{action}", data={"csrf": csrf}, follow_redirects=False)
        assert page.status_code == 409, action
        assert "text/html" in page.headers["content-type"]
        assert "Being deleted" in page.text and "No such bot" not in page.text, action
        assert f"leaving is being deleted, so it can no longer be {what}" in page.text, action
    # Delete again: accepted, as the APIs accept it, and nothing else changes.
    again = anonymous.post(f"/bots/{bot}/delete", data={"csrf": csrf}, follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"] == "/?notice=deleted"
    # Its page says it is going and offers nothing it would refuse.
    page = anonymous.get(f"/bots/{bot}").text
    assert 'id="bot-status">deleting' in page
    assert "data-action=" not in page and f"/deploy?bot={bot}" not in page
    # Deploy new code: the form for it, and a form sent for it, say the same (what was typed kept).
    form_page = anonymous.get(f"/deploy?bot={bot}")
    assert form_page.status_code == 409 and "leaving is being deleted, so it can no longer be redeployed" in (
        form_page.text
    )
    form = {"csrf": csrf, "name": "leaving", "code": "print(42)\n", "interval": "5", "config": "{}"}
    sent = anonymous.post("/deploy", data={**form, "exchange": "paper", "bot": bot})
    assert sent.status_code == 409
    assert f"bot &#39;{bot}&#39; is being deleted; it can no longer be redeployed" in sent.text
    assert "print(42)" in sent.text
    detail = anonymous.get(f"/api/bot/deployments/{bot}", headers=bearer("alice")).json()
    assert detail["status"] == "deleting" and detail["generation"] == deleting["generation"]
    assert detail["desiredState"] == "running" and detail["code"] != "print(42)\n"
    # Once its rows are gone it is no bot at all.
    pg_conn.execute("DELETE FROM strategies WHERE strategy_id = %s", (bot,))  # type: ignore[attr-defined]
    for action in ("run", "stop", "start", "delete"):
        gone = anonymous.post(f"/bots/{bot}/{action}", data={"csrf": csrf})
        assert gone.status_code == 404 and "No such bot" in gone.text, action
    assert anonymous.get(f"/deploy?bot={bot}").status_code == 404
