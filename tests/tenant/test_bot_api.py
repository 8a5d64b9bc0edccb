"""The tenant API's routes, in the camelCase the platform's frontend uses, over a real database."""

from __future__ import annotations

import psycopg
from starlette.testclient import TestClient

from reconciler.storage.db import libpq_url
from tests.api.conftest import BuildClient
from tests.api.replica import write_execution, write_order, write_status
from tests.tenant.conftest import CODE, JWT_SECRET, bearer, start_body

ALICE = bearer("alice")


def deploy(client: TestClient, **fields: object) -> dict[str, object]:
    response = client.post("/api/bot/start", headers=ALICE, json=start_body(**fields))
    assert response.status_code in (200, 201), response.text
    return response.json()


def test_start_deploys_a_running_bot_owned_by_the_tokens_user(tenant_client: TestClient, pg_conn: psycopg.Connection):
    response = tenant_client.post("/api/bot/start", headers=ALICE, json=start_body())
    assert response.status_code == 201, response.text
    bot = response.json()
    fields = ("deploymentId", "executionInterval", "nextExecutionAt", "executionCount", "lastExecutionDuration",
              "successfulExecutions", "failedExecutions", "avgExecutionTime", "status", "recentExecutions")  # fmt: skip
    for field in fields:
        assert field in bot, field
    assert bot["executionInterval"] == 5 and bot["desiredState"] == "running" and bot["status"] == "pending"
    assert bot["executionCount"] == 0 and bot["exchange"] == "paper"
    row = pg_conn.execute(
        "SELECT user_id, name, code, desired_state FROM strategies WHERE strategy_id = %s", (bot["deploymentId"],)
    ).fetchone()
    assert row == ("alice", "bot-1", CODE, "running")


def test_start_again_with_the_same_name_redeploys_in_place(tenant_client: TestClient) -> None:
    first = deploy(tenant_client)
    response = tenant_client.post("/api/bot/start", headers=ALICE, json=start_body(executionInterval=7))
    assert response.status_code == 200
    again = response.json()
    assert again["deploymentId"] == first["deploymentId"]
    assert again["generation"] == 2 and again["executionInterval"] == 7
    other = deploy(tenant_client, name="bot-2")
    assert other["deploymentId"] != first["deploymentId"]


def test_redeploy_by_id_and_restart_by_id(tenant_client: TestClient) -> None:
    bot = deploy(tenant_client)
    bot_id = bot["deploymentId"]
    renamed = tenant_client.post(
        "/api/bot/start", headers=ALICE, json=start_body(deploymentId=bot_id, name="renamed")
    ).json()
    assert renamed["deploymentId"] == bot_id and renamed["name"] == "renamed"
    stopped = tenant_client.post("/api/bot/stop", headers=ALICE, json={"deploymentId": bot_id})
    assert stopped.status_code == 200 and stopped.json()["desiredState"] == "stopped"
    restarted = tenant_client.post("/api/bot/start", headers=ALICE, json={"deploymentId": bot_id})
    assert restarted.status_code == 200 and restarted.json()["desiredState"] == "running"
    assert restarted.json()["generation"] == 4


def test_a_compile_error_names_its_line_and_column(tenant_client: TestClient) -> None:
    response = tenant_client.post("/api/bot/start", headers=ALICE, json=start_body(code="x = 1\ny = (\n"))
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["field"] == "code" and error["line"] == 2 and error["column"] >= 1
    refused = tenant_client.post("/api/bot/start", headers=ALICE, json=start_body(code="x = 1\nimport os\n"))
    assert refused.status_code == 422 and refused.json()["detail"][0]["line"] == 2


def test_bad_bodies_get_field_errors_in_camel_case(tenant_client: TestClient) -> None:
    cases = {
        "missing code": (start_body(code=...), "code"),
        "snake_case name": ({**start_body(executionInterval=...), "execution_interval": 5}, "execution_interval"),
        "interval out of bounds": (start_body(executionInterval=0), "executionInterval"),
        "interval a string": (start_body(executionInterval="5"), "executionInterval"),
        "config not an object": (start_body(config=[1]), "config"),
        "a key without its secret": (start_body(apiKey="k"), "apiSecret"),
        "coindcx without credentials": (start_body(exchange="coindcx"), "apiKey"),
        "unknown exchange": (start_body(exchange="binance"), "exchange"),
    }
    for name, (body, field) in cases.items():
        response = tenant_client.post("/api/bot/start", headers=ALICE, json=body)
        assert response.status_code == 422, (name, response.text)
        assert response.json()["error"] == "validation_error"
        text = response.text
        assert field in text, (name, text)
    assert tenant_client.post("/api/bot/start", headers=ALICE, content=b"{").status_code == 422
    assert tenant_client.post("/api/bot/stop", headers=ALICE, json={}).status_code == 422
    assert tenant_client.get("/api/bot/deployments?limit=0", headers=ALICE).status_code == 422
    assert tenant_client.get("/api/bot/deployments?cursor=zz", headers=ALICE).status_code == 422
    assert tenant_client.get("/api/bot/deployments/%20bad", headers=ALICE).status_code == 422


def test_list_shows_statistics_and_recent_outcomes(tenant_client: TestClient, pg_conn: psycopg.Connection) -> None:
    bot_id = deploy(tenant_client)["deploymentId"]
    write_status(
        pg_conn, bot_id, execution_count=3, successful_executions=2, failed_executions=1,
        avg_execution_time=0.25, last_execution_duration=0.5, next_execution_at="2030-01-01T00:00:00Z",
    )  # fmt: skip
    write_execution(pg_conn, bot_id, scheduled_for="2026-01-01T00:00:00Z")
    write_execution(pg_conn, bot_id, status="failed", scheduled_for="2026-01-01T00:00:05Z", error="boom")
    listed = tenant_client.get("/api/bot/deployments", headers=ALICE).json()
    (item,) = listed["items"]
    assert listed["nextCursor"] is None
    assert item["executionCount"] == 3 and item["successfulExecutions"] == 2 and item["failedExecutions"] == 1
    assert item["avgExecutionTime"] == 0.25 and item["lastExecutionDuration"] == 0.5
    assert item["nextExecutionAt"].startswith("2030-01-01")
    assert [e["status"] for e in item["recentExecutions"]] == ["failed", "succeeded"]


def test_answers_to_start_stop_and_delete_carry_the_recent_outcomes_as_the_list_does(
    tenant_client: TestClient, pg_conn: psycopg.Connection
) -> None:
    bot = deploy(tenant_client)
    write_execution(pg_conn, str(bot["deploymentId"]), scheduled_for="2026-01-01T00:00:00Z")
    write_execution(pg_conn, str(bot["deploymentId"]), status="failed", scheduled_for="2026-01-01T00:00:05Z", error="x")
    (listed,) = tenant_client.get("/api/bot/deployments", headers=ALICE).json()["items"]
    bot_id = bot["deploymentId"]
    redeployed = tenant_client.post("/api/bot/start", headers=ALICE, json=start_body(deploymentId=bot_id))
    stopped = tenant_client.post("/api/bot/stop", headers=ALICE, json={"deploymentId": bot_id})
    restarted = tenant_client.post("/api/bot/start", headers=ALICE, json={"deploymentId": bot_id})
    deleted = tenant_client.delete(f"/api/bot/deployments/{bot_id}", headers=ALICE)
    assert [e["status"] for e in listed["recentExecutions"]] == ["failed", "succeeded"]
    for answer in (redeployed, stopped, restarted, deleted):
        assert answer.status_code < 300, answer.text
        assert answer.json()["recentExecutions"] == listed["recentExecutions"]


def test_list_pages_with_a_cursor(tenant_client: TestClient) -> None:
    ids = {deploy(tenant_client, name=f"bot-{n}")["deploymentId"] for n in range(5)}
    seen: list[str] = []
    cursor = None
    while True:
        url = "/api/bot/deployments?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = tenant_client.get(url, headers=ALICE).json()
        seen.extend(item["deploymentId"] for item in page["items"])
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert len(seen) == 5 and set(seen) == ids


def test_detail_has_code_state_executions_orders_and_the_paper_wallet(
    tenant_client: TestClient, pg_conn: psycopg.Connection
) -> None:
    bot_id = deploy(tenant_client)["deploymentId"]
    fresh = tenant_client.get(f"/api/bot/deployments/{bot_id}", headers=ALICE).json()
    assert fresh["wallet"]["starting"] is True and fresh["wallet"]["valueHistory"] == []
    assert {b["currency"] for b in fresh["wallet"]["balances"]} == {"USDT", "INR"}

    write_status(pg_conn, bot_id, state='{"entry": 61000.5}')
    execution = write_execution(pg_conn, bot_id, output="bought\n", error="Traceback: line 3")
    pg_conn.execute(
        "UPDATE executions SET wallet_value = 21000.5, wallet_currency = 'USDT' WHERE execution_id = %s", (execution,)
    )
    write_order(pg_conn, bot_id, client_order_id="c-1", execution_id=execution)
    pg_conn.execute(
        "INSERT INTO paper_balances (strategy_id, currency, balance, locked_balance) VALUES (%s, 'BTC', 0.01, 0)",
        (bot_id,),
    )
    body = tenant_client.get(f"/api/bot/deployments/{bot_id}", headers=ALICE).json()
    assert body["code"] == CODE and body["config"] == {"pair": "BTCUSDT"} and body["state"] == {"entry": 61000.5}
    (run,) = body["recentExecutions"]
    assert run["output"] == "bought\n" and run["error"] == "Traceback: line 3" and run["replicaId"] == "replica-a"
    assert run["duration"] == 0.25 and run["walletValue"] == "21000.5"
    (order,) = body["recentOrders"]
    assert order["clientOrderId"] == "c-1" and order["totalQuantity"] == "0.015" and order["market"] == "BTCUSDT"
    assert body["wallet"]["starting"] is False
    assert body["wallet"]["balances"] == [{"currency": "BTC", "balance": "0.01", "lockedBalance": "0"}]
    (point,) = body["wallet"]["valueHistory"]
    assert point["value"] == "21000.5" and point["currency"] == "USDT" and point["executionId"] == str(execution)


def test_a_live_bot_has_no_wallet_and_never_returns_its_credentials(tenant_client: TestClient) -> None:
    body = start_body(exchange="coindcx", apiKey="key-123", apiSecret="secret-456")
    created = tenant_client.post("/api/bot/start", headers=ALICE, json=body)
    assert created.status_code == 201 and created.json()["hasCredentials"] is True
    detail = tenant_client.get(f"/api/bot/deployments/{created.json()['deploymentId']}", headers=ALICE)
    assert detail.json()["wallet"] is None
    for response in (created, detail, tenant_client.get("/api/bot/deployments", headers=ALICE)):
        assert "secret-456" not in response.text and "key-123" not in response.text


def test_delete_and_run(tenant_client: TestClient) -> None:
    bot_id = deploy(tenant_client)["deploymentId"]
    run = tenant_client.post(f"/api/bot/deployments/{bot_id}/run", headers=ALICE)
    assert run.status_code == 202 and run.json()["deploymentId"] == bot_id
    deleted = tenant_client.delete(f"/api/bot/deployments/{bot_id}", headers=ALICE)
    assert deleted.status_code == 202 and deleted.json()["status"] == "deleting"
    # The bot is still listed (deleting), so "not found" would contradict what its user sees: a
    # conflict, as the executor API answers a run of a strategy being deleted.
    refused = tenant_client.post(f"/api/bot/deployments/{bot_id}/run", headers=ALICE)
    assert refused.status_code == 409
    assert refused.json() == {
        "error": "conflict",
        "message": f"bot {bot_id!r} is being deleted; it can no longer be run",
    }
    # Another user still learns nothing about it.
    assert tenant_client.post(f"/api/bot/deployments/{bot_id}/run", headers=bearer("bob")).status_code == 404
    # Deploying the same name now makes a new bot: the old one is on its way out.
    assert deploy(tenant_client)["deploymentId"] != bot_id


def test_every_write_to_a_bot_being_deleted_is_a_409_saying_so(
    tenant_client: TestClient, pg_conn: psycopg.Connection
) -> None:
    """The executor API's answers for a strategy being deleted, in the tenant API's words: its list
    still shows the bot (`deleting`), so a 404 would contradict it. Nothing changes."""
    bot_id = deploy(tenant_client)["deploymentId"]
    assert tenant_client.delete(f"/api/bot/deployments/{bot_id}", headers=ALICE).status_code == 202
    before = pg_conn.execute(
        "SELECT desired_state, generation, name, code FROM strategies WHERE strategy_id = %s", (bot_id,)
    ).fetchone()
    writes = {
        "be stopped": ("/api/bot/stop", {"deploymentId": bot_id}),
        "be started": ("/api/bot/start", {"deploymentId": bot_id}),
        "be redeployed": ("/api/bot/start", start_body(deploymentId=bot_id, code="print(2)\n")),
        "be run": (f"/api/bot/deployments/{bot_id}/run", None),
    }
    for what, (path, body) in writes.items():
        response = tenant_client.post(path, headers=ALICE, json=body)
        assert response.status_code == 409, (what, response.text)
        assert response.json() == {
            "error": "conflict",
            "message": f"bot {bot_id!r} is being deleted; it can no longer {what}",
        }, what
        # Another user's request learns nothing about it: the answer to an unknown id.
        assert tenant_client.post(path, headers=bearer("bob"), json=body).status_code == 404, what
    # Deleting again is accepted and changes nothing, as the executor API's repeated DELETE.
    again = tenant_client.delete(f"/api/bot/deployments/{bot_id}", headers=ALICE)
    assert again.status_code == 202 and again.json()["status"] == "deleting"
    assert tenant_client.delete(f"/api/bot/deployments/{bot_id}", headers=bearer("bob")).status_code == 404
    after = pg_conn.execute(
        "SELECT desired_state, generation, name, code FROM strategies WHERE strategy_id = %s", (bot_id,)
    ).fetchone()
    assert after == before
    assert pg_conn.execute("SELECT count(*) FROM run_requests WHERE strategy_id = %s", (bot_id,)).fetchone() == (0,)
    # Once a replica has removed its rows, the bot is unknown again.
    pg_conn.execute("DELETE FROM strategies WHERE strategy_id = %s", (bot_id,))
    for what, (path, body) in writes.items():
        assert tenant_client.post(path, headers=ALICE, json=body).status_code == 404, what
    assert tenant_client.delete(f"/api/bot/deployments/{bot_id}", headers=ALICE).status_code == 404


def test_a_redeploy_by_id_of_a_bot_whose_deletion_finishes_meanwhile_is_404_not_the_bot_again(
    build_client: BuildClient, database_url: str, pg_conn: psycopg.Connection
) -> None:
    """The race: the start has checked that the id is the user's bot, and while the code compiles a
    replica finalizes the bot's deletion. The redeploy finds nothing to replace and answers as for an
    unknown id, instead of bringing the deleted bot back under its id."""
    finalize: list[str] = []  # the bots whose deletion finishes during the next compile

    def compile_while_a_replica_finalizes(code: str) -> None:
        with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
            for bot_id in finalize:
                conn.execute("UPDATE strategies SET delete_requested_at = now() WHERE strategy_id = %s", (bot_id,))
                # What a replica's finalize runs (FINALIZE_DELETION) once nothing is in flight.
                conn.execute(
                    "DELETE FROM strategies WHERE strategy_id = %s AND delete_requested_at IS NOT NULL", (bot_id,)
                )
        finalize.clear()

    client = build_client(jwt_secret=JWT_SECRET, check_code=compile_while_a_replica_finalizes)
    bot_id = deploy(client)["deploymentId"]
    finalize.append(bot_id)
    response = client.post("/api/bot/start", headers=ALICE, json=start_body(deploymentId=bot_id, code="print(2)\n"))
    assert response.status_code == 404, response.text
    assert response.json() == {"error": "not_found", "message": f"no deployment {bot_id!r}"}
    assert pg_conn.execute("SELECT count(*) FROM strategies").fetchone() == (0,)
    # A start without an id still deploys a new bot, under a new id.
    assert deploy(client)["deploymentId"] != bot_id


def test_run_while_a_run_is_pending_joins_it(tenant_client: TestClient, pg_conn: psycopg.Connection) -> None:
    bot_id = deploy(tenant_client)["deploymentId"]
    first = tenant_client.post(f"/api/bot/deployments/{bot_id}/run", headers=ALICE)
    again = tenant_client.post(f"/api/bot/deployments/{bot_id}/run", headers=ALICE)
    assert first.status_code == again.status_code == 202
    assert first.json()["alreadyPending"] is False and first.json()["requestCount"] == 1
    assert again.json()["alreadyPending"] is True and again.json()["requestCount"] == 2
    assert again.json()["runRequestId"] == first.json()["runRequestId"]
    count = pg_conn.execute("SELECT count(*) FROM run_requests WHERE strategy_id = %s", (bot_id,)).fetchone()
    assert count == (1,)


def test_run_of_a_halted_bot_is_409_saying_why_and_how_to_resume(
    tenant_client: TestClient, pg_conn: psycopg.Connection
) -> None:
    bot_id = str(deploy(tenant_client)["deploymentId"])
    write_status(
        pg_conn,
        bot_id,
        status="halted",
        halted_at="2026-11-27T10:00:00Z",
        halt_limit="max_consecutive_failures",
        halt_value=3,
        halt_threshold=3,
        status_reason="halted by max_consecutive_failures: 3 executions in a row did not succeed",
    )
    response = tenant_client.post(f"/api/bot/deployments/{bot_id}/run", headers=ALICE)
    assert response.status_code == 409
    assert response.json() == {
        "error": "strategy_halted",
        "message": f"bot {bot_id!r} is halted by its risk guard since 2026-11-27T10:00:00Z (halted by"
        " max_consecutive_failures: 3 executions in a row did not succeed); it stays halted until POST"
        f' /api/bot/start with {{"deploymentId": "{bot_id}"}} resumes it. No run was requested: run it once'
        " it has resumed.",
        # The executor API's `halt` object, in this API's camelCase (haltedAt and resumeAt as the bot has them).
        "halt": {
            "limit": "max_consecutive_failures",
            "value": "3",
            "threshold": "3",
            "haltedAt": "2026-11-27T10:00:00Z",
            "resumeAt": None,
        },
    }
    bot = tenant_client.get(f"/api/bot/deployments/{bot_id}", headers=ALICE).json()
    assert (bot["haltedAt"], bot["resumeAt"]) == (response.json()["halt"]["haltedAt"], None)
    assert pg_conn.execute("SELECT count(*) FROM run_requests").fetchone() == (0,)
    # Another user still learns nothing: 404, as for an id that does not exist.
    assert tenant_client.post(f"/api/bot/deployments/{bot_id}/run", headers=bearer("bob")).status_code == 404


def test_run_of_a_bot_halted_without_its_figures_is_still_a_409_with_nulls(
    tenant_client: TestClient, pg_conn: psycopg.Connection
) -> None:
    """A halt written by hand, with no limit, value or threshold: the same 409, null where unknown."""
    bot_id = str(deploy(tenant_client)["deploymentId"])
    write_status(pg_conn, bot_id, status="halted", halted_at="2026-11-27T10:00:00Z")
    response = tenant_client.post(f"/api/bot/deployments/{bot_id}/run", headers=ALICE)
    assert response.status_code == 409, response.text
    assert "(no limit is on record)" in response.json()["message"]
    assert response.json()["halt"] == {
        "limit": None,
        "value": None,
        "threshold": None,
        "haltedAt": "2026-11-27T10:00:00Z",
        "resumeAt": None,
    }


def test_unknown_ids_are_404(tenant_client: TestClient) -> None:
    for method, path, body in [
        ("GET", "/api/bot/deployments/nope", None),
        ("DELETE", "/api/bot/deployments/nope", None),
        ("POST", "/api/bot/deployments/nope/run", None),
        ("POST", "/api/bot/stop", {"deploymentId": "nope"}),
        ("POST", "/api/bot/start", {"deploymentId": "nope"}),
        ("POST", "/api/bot/start", start_body(deploymentId="nope")),
    ]:
        response = tenant_client.request(method, path, headers=ALICE, json=body)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"] == "not_found"
