"""Two users, every tenant route: neither ever sees or changes the other's bots; the other's ids
answer 404 exactly like ids that do not exist."""

from __future__ import annotations

import psycopg
from starlette.testclient import TestClient

from tests.api.replica import write_execution, write_status
from tests.tenant.conftest import bearer, start_body

ALICE, BOB = bearer("alice"), bearer("bob")


def test_no_route_crosses_between_users(tenant_client: TestClient, pg_conn: psycopg.Connection) -> None:
    alice_bot = tenant_client.post("/api/bot/start", headers=ALICE, json=start_body(name="shared-name")).json()
    bob_bot = tenant_client.post("/api/bot/start", headers=BOB, json=start_body(name="shared-name")).json()
    a_id, b_id = alice_bot["deploymentId"], bob_bot["deploymentId"]
    # The same name is each user's own: Bob's deploy did not redeploy Alice's bot.
    assert a_id != b_id and alice_bot["generation"] == bob_bot["generation"] == 1
    write_status(pg_conn, a_id, state='{"secret_plan": 1}')
    write_execution(pg_conn, a_id, output="alice's output\n")

    def before() -> tuple[object, ...]:
        return pg_conn.execute(
            "SELECT user_id, name, code, generation, desired_state, delete_requested_at FROM strategies "
            "WHERE strategy_id = %s",
            (a_id,),
        ).fetchone()

    untouched = before()

    # Reads
    listed = tenant_client.get("/api/bot/deployments", headers=BOB).json()
    assert [item["deploymentId"] for item in listed["items"]] == [b_id]
    assert tenant_client.get(f"/api/bot/deployments/{a_id}", headers=BOB).status_code == 404
    # Writes, each by id and each refused as "not found"
    attempts = [
        ("POST", "/api/bot/stop", {"deploymentId": a_id}),
        ("POST", "/api/bot/start", {"deploymentId": a_id}),
        ("POST", "/api/bot/start", start_body(deploymentId=a_id, code="print('pwned')\n")),
        ("POST", f"/api/bot/deployments/{a_id}/run", None),
        ("DELETE", f"/api/bot/deployments/{a_id}", None),
    ]
    for method, path, body in attempts:
        response = tenant_client.request(method, path, headers=BOB, json=body)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json() == {"error": "not_found", "message": f"no deployment {a_id!r}"}
        # Indistinguishable from an id that does not exist:
        missing = tenant_client.request(
            method, path.replace(a_id, "does-not-exist"), headers=BOB,
            json={**body, "deploymentId": "does-not-exist"} if body else None,
        )  # fmt: skip
        assert missing.status_code == 404
    assert before() == untouched
    assert pg_conn.execute("SELECT count(*) FROM run_requests WHERE strategy_id = %s", (a_id,)).fetchone() == (0,)
    # Nothing of Alice's shows in anything Bob can read.
    for path in ("/api/bot/deployments", f"/api/bot/deployments/{b_id}"):
        text = tenant_client.get(path, headers=BOB).text
        assert a_id not in text and "alice's output" not in text and "secret_plan" not in text

    # And Alice still has hers, in full.
    mine = tenant_client.get(f"/api/bot/deployments/{a_id}", headers=ALICE).json()
    assert mine["state"] == {"secret_plan": 1}
    assert [
        item["deploymentId"] for item in tenant_client.get("/api/bot/deployments", headers=ALICE).json()["items"]
    ] == [a_id]


def test_a_bot_deployed_for_a_user_through_the_executor_api_is_that_users(tenant_client: TestClient) -> None:
    from tests.api.conftest import AUTH, deploy_body

    assert tenant_client.post("/strategies/deploy", headers=AUTH, json=deploy_body(user_id="bob")).status_code == 201
    assert [i["deploymentId"] for i in tenant_client.get("/api/bot/deployments", headers=BOB).json()["items"]] == ["s1"]
    assert tenant_client.get("/api/bot/deployments", headers=ALICE).json()["items"] == []
    assert tenant_client.get("/api/bot/deployments/s1", headers=ALICE).status_code == 404
