"""Lists and reads: strategies, executions, orders; pagination, filters, and their 422s."""

from __future__ import annotations

import psycopg
import pytest
from starlette.testclient import TestClient

from tests.api.conftest import deploy_body
from tests.api.replica import write_execution, write_order, write_status


def deploy_many(client: TestClient, count: int, **fields: object) -> list[str]:
    ids = []
    for i in range(count):
        strategy_id = f"s{i:02d}"
        response = client.post("/strategies/deploy", json=deploy_body(strategy_id=strategy_id, **fields))
        assert response.status_code == 201
        ids.append(strategy_id)
    return ids


def test_list_is_newest_first_without_code_and_paginates(client: TestClient) -> None:
    ids = deploy_many(client, 7)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        response = client.get("/strategies", params=params)
        assert response.status_code == 200
        body = response.json()
        assert len(body["items"]) <= 3
        assert all(item["code"] is None for item in body["items"])
        seen.extend(item["strategy_id"] for item in body["items"])
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(ids))


def test_list_with_code(client: TestClient) -> None:
    deploy_many(client, 1)
    (item,) = client.get("/strategies?include_code=true").json()["items"]
    assert item["code"] == "x = 1\n"


def test_list_default_limit_is_50(client: TestClient) -> None:
    deploy_many(client, 52)
    body = client.get("/strategies").json()
    assert len(body["items"]) == 50
    assert body["next_cursor"] is not None


def test_list_filters_by_user_and_status(client: TestClient, pg_conn: psycopg.Connection) -> None:
    deploy_many(client, 3)
    client.post("/strategies/deploy", json=deploy_body(strategy_id="other", user_id="u2"))
    write_status(pg_conn, "s00", status="running")
    write_status(pg_conn, "s01", status="error")
    client.delete("/strategies/s02")

    def ids(query: str) -> list[str]:
        response = client.get(f"/strategies?{query}")
        assert response.status_code == 200
        return [item["strategy_id"] for item in response.json()["items"]]

    assert ids("user_id=u2") == ["other"]
    assert ids("user_id=u1") == ["s02", "s01", "s00"]
    assert ids("status=running") == ["s00"]
    assert ids("status=error") == ["s01"]
    assert ids("status=deleting") == ["s02"]
    assert ids("status=pending") == ["other"]
    assert ids("status=pending&user_id=u1") == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("status=asleep", "status"),
        ("cursor=garbage", "cursor"),
        ("user_id=a%20b", "user_id"),
        ("offset=5&limit=5", "offset"),
    ],
)
def test_list_refuses_bad_queries(client: TestClient, query: str, field: str) -> None:
    response = client.get(f"/strategies?{query}")
    assert response.status_code == 422
    assert response.json()["error"] == "validation_error"
    assert [d["field"] for d in response.json()["detail"]] == [field]


def test_list_limit_500_is_allowed(client: TestClient) -> None:
    assert client.get("/strategies?limit=500").status_code == 200


def test_executions_newest_first_filtered_and_paginated(client: TestClient, pg_conn: psycopg.Connection) -> None:
    deploy_many(client, 1)
    ids = [
        write_execution(pg_conn, "s00", scheduled_for=f"2026-01-01T00:00:{second:02d}Z", status=status)
        for second, status in [(0, "succeeded"), (5, "failed"), (10, "succeeded"), (15, "timed_out")]
    ]
    body = client.get("/strategies/s00/executions").json()
    assert [item["execution_id"] for item in body["items"]] == [str(i) for i in reversed(ids)]
    assert body["next_cursor"] is None
    first = body["items"][-1]
    assert first["status"] == "succeeded"
    assert first["trigger"] == "schedule"
    assert first["scheduled_for"] == "2026-01-01T00:00:00Z"
    assert first["output"] == "hello\n"
    assert first["output_truncated"] is False
    assert first["result"] == {"signal": "buy"}
    assert first["replica_id"] == "replica-a"
    assert first["generation"] == 1
    assert first["duration"] == 0.25
    for name in ("claimed_at", "started_at", "finished_at", "error"):
        assert name in first

    succeeded = client.get("/strategies/s00/executions?status=succeeded").json()["items"]
    assert [item["execution_id"] for item in succeeded] == [str(ids[2]), str(ids[0])]

    page1 = client.get("/strategies/s00/executions?limit=3").json()
    assert len(page1["items"]) == 3
    page2 = client.get(f"/strategies/s00/executions?limit=3&cursor={page1['next_cursor']}").json()
    assert [item["execution_id"] for item in page2["items"]] == [str(ids[0])]
    assert page2["next_cursor"] is None

    assert client.get("/strategies/s00/executions?status=bogus").status_code == 422
    assert client.get("/strategies/s00/executions?cursor=xyz").status_code == 422


def test_get_execution(client: TestClient, pg_conn: psycopg.Connection) -> None:
    deploy_many(client, 1)
    execution_id = write_execution(pg_conn, "s00", status="failed", error="boom", result=None)
    response = client.get(f"/executions/{execution_id}")
    assert response.status_code == 200
    body = response.json()
    assert body["execution_id"] == str(execution_id)
    assert (body["status"], body["error"], body["result"]) == ("failed", "boom", None)


def test_orders_newest_first_and_paginated(client: TestClient, pg_conn: psycopg.Connection) -> None:
    deploy_many(client, 1)
    execution_id = write_execution(pg_conn, "s00")
    order_ids = []
    for i in range(3):
        with pg_conn.transaction():  # one transaction each: distinct created_at
            order_ids.append(write_order(pg_conn, "s00", client_order_id=f"c{i}", execution_id=execution_id))
    body = client.get("/strategies/s00/orders").json()
    assert [item["order_id"] for item in body["items"]] == [str(i) for i in reversed(order_ids)]
    order = body["items"][0]
    assert order["client_order_id"] == "c2"
    assert order["execution_id"] == str(execution_id)
    assert (order["market"], order["side"], order["order_type"]) == ("BTCUSDT", "buy", "limit_order")
    assert order["total_quantity"] == "0.015"
    assert order["price_per_unit"] == "65000.5"
    page = client.get("/strategies/s00/orders?limit=2").json()
    rest = client.get(f"/strategies/s00/orders?limit=2&cursor={page['next_cursor']}").json()
    assert [i["order_id"] for i in page["items"] + rest["items"]] == [str(i) for i in reversed(order_ids)]
    assert client.get("/strategies/s00/orders?limit=-1").status_code == 422


def test_reads_of_a_strategy_being_deleted_still_work(client: TestClient) -> None:
    deploy_many(client, 1)
    client.delete("/strategies/s00")
    assert client.get("/strategies/s00").json()["status"] == "deleting"
    assert client.get("/strategies/s00/executions").status_code == 200
    assert client.get("/strategies/s00/orders").status_code == 200


def test_paper_wallet_shows_the_starting_wallet_then_the_traded_one(
    client: TestClient, pg_conn: psycopg.Connection
) -> None:
    assert client.post("/strategies/deploy", json=deploy_body()).status_code == 201
    starting = client.get("/strategies/s1/balances").json()
    assert starting["starting"] is True
    assert {b["currency"]: b["balance"] for b in starting["balances"]} == {"INR": "1000000.0", "USDT": "10000.0"}
    pg_conn.execute(
        "INSERT INTO paper_balances (strategy_id, currency, balance, locked_balance) "
        "VALUES ('s1', 'USDT', 9950.5, 10), ('s1', 'BTC', 0.001, 0)"
    )
    traded = client.get("/strategies/s1/balances").json()
    assert traded["starting"] is False
    assert traded["balances"] == [
        {"currency": "BTC", "balance": "0.001", "locked_balance": "0"},
        {"currency": "USDT", "balance": "9950.5", "locked_balance": "10"},
    ]


def test_paper_wallet_of_unknown_or_live_strategies(client: TestClient) -> None:
    assert client.get("/strategies/nobody/balances").status_code == 404
    live = deploy_body(strategy_id="live", exchange="coindcx", api_key="k", api_secret="s")
    assert client.post("/strategies/deploy", json=live).status_code == 201
    response = client.get("/strategies/live/balances")
    assert response.status_code == 409
    assert "client.get_balances()" in response.json()["message"]
