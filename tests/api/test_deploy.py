"""POST /strategies/deploy: what it writes, and every way it refuses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from starlette.testclient import TestClient

from reconciler.policy import PolicyError
from tests.api.conftest import KEY_ID, BuildClient, deploy_body, unseal


def strategy_row(conn: psycopg.Connection, strategy_id: str = "s1") -> dict[str, Any]:
    cur = conn.execute("SELECT * FROM strategies WHERE strategy_id = %s", (strategy_id,))
    row = cur.fetchone()
    assert row is not None
    return dict(zip([c.name for c in cur.description], row, strict=True))


def test_deploy_writes_the_spec_with_generation_1(client: TestClient, pg_conn: psycopg.Connection) -> None:
    response = client.post("/strategies/deploy", json=deploy_body())
    assert response.status_code == 201
    body = response.json()
    assert body["strategy_id"] == "s1"
    assert body["generation"] == 1
    assert body["status"] == "pending"
    assert body["desired_state"] == "running"
    assert body["has_credentials"] is False
    row = strategy_row(pg_conn)
    assert row["user_id"] == "u1"
    assert row["name"] == "first"
    assert row["code"] == "x = 1\n"
    assert row["config"] == {"pair": "BTCUSDT"}
    assert row["execution_interval"] == 5
    assert row["exchange"] == "paper"
    assert row["desired_state"] == "running"
    assert row["generation"] == 1
    assert row["delete_requested_at"] is None
    # The API never writes status.
    assert pg_conn.execute("SELECT count(*) FROM strategy_status").fetchone() == (0,)


def test_redeploy_replaces_the_spec_and_bumps_the_generation(client: TestClient, pg_conn: psycopg.Connection) -> None:
    assert client.post("/strategies/deploy", json=deploy_body()).status_code == 201
    created_at = strategy_row(pg_conn)["created_at"]
    response = client.post(
        "/strategies/deploy",
        json=deploy_body(code="y = 2\n", config={}, execution_interval=60, name="renamed", auto_start=False),
    )
    assert response.status_code == 200
    assert response.json()["generation"] == 2
    row = strategy_row(pg_conn)
    assert (row["code"], row["config"], row["execution_interval"], row["name"]) == ("y = 2\n", {}, 60, "renamed")
    assert row["desired_state"] == "stopped"
    assert row["generation"] == 2
    assert row["created_at"] == created_at
    assert row["updated_at"] > created_at
    assert pg_conn.execute("SELECT count(*) FROM strategies").fetchone() == (1,)


def test_auto_start_false_deploys_stopped(client: TestClient, pg_conn: psycopg.Connection) -> None:
    response = client.post("/strategies/deploy", json=deploy_body(auto_start=False))
    assert response.json()["desired_state"] == "stopped"
    assert strategy_row(pg_conn)["desired_state"] == "stopped"


def test_missing_strategy_id_and_name_are_generated(client: TestClient, pg_conn: psycopg.Connection) -> None:
    response = client.post("/strategies/deploy", json=deploy_body(strategy_id=..., name=...))
    assert response.status_code == 201
    strategy_id = response.json()["strategy_id"]
    assert len(strategy_id) == 32 and int(strategy_id, 16) >= 0
    assert strategy_row(pg_conn, strategy_id)["name"] == strategy_id


def test_credentials_are_stored_sealed_only(client: TestClient, pg_conn: psycopg.Connection) -> None:
    body = deploy_body(exchange="coindcx", api_key="KEY-PLAINTEXT", api_secret="SECRET-PLAINTEXT")
    response = client.post("/strategies/deploy", json=body)
    assert response.status_code == 201
    assert response.json()["has_credentials"] is True
    assert "PLAINTEXT" not in response.text
    key_id, sealed = pg_conn.execute("SELECT key_id, credentials FROM strategy_credentials").fetchone()
    assert key_id == KEY_ID
    assert b"PLAINTEXT" not in sealed
    assert unseal(sealed) == ["s1", "KEY-PLAINTEXT", "SECRET-PLAINTEXT"]
    for table in ("strategies", "run_requests", "strategy_status"):
        dump = pg_conn.execute(f"SELECT coalesce(json_agg(t)::text, '') FROM {table} t").fetchone()[0]
        assert "PLAINTEXT" not in dump
    assert strategy_row(pg_conn)["exchange"] == "coindcx"


def test_redeploy_replaces_credentials_and_paper_removes_them(client: TestClient, pg_conn: psycopg.Connection) -> None:
    client.post("/strategies/deploy", json=deploy_body(exchange="coindcx", api_key="k1", api_secret="s1"))
    client.post("/strategies/deploy", json=deploy_body(exchange="coindcx", api_key="k2", api_secret="s2"))
    (sealed,) = pg_conn.execute("SELECT credentials FROM strategy_credentials").fetchone()
    assert unseal(sealed) == ["s1", "k2", "s2"]
    response = client.post("/strategies/deploy", json=deploy_body(exchange="paper"))
    assert response.json()["has_credentials"] is False
    assert pg_conn.execute("SELECT count(*) FROM strategy_credentials").fetchone() == (0,)


def test_coindcx_requires_both_credentials(client: TestClient, pg_conn: psycopg.Connection) -> None:
    response = client.post("/strategies/deploy", json=deploy_body(exchange="coindcx", api_key="k"))
    assert response.status_code == 422
    assert response.json()["detail"] == [{"field": "api_secret", "reason": "required with exchange 'coindcx'"}]
    assert pg_conn.execute("SELECT count(*) FROM strategies").fetchone() == (0,)


def test_the_seed_backends_body_trades_live_with_its_credentials(
    client: TestClient, pg_conn: psycopg.Connection
) -> None:
    # {strategy_id, user_id, code, config, execution_interval, api_key, api_secret}: no exchange, no name.
    body = deploy_body(name=..., api_key="k", api_secret="s")
    response = client.post("/strategies/deploy", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["exchange"] == "coindcx" and response.json()["has_credentials"] is True
    assert strategy_row(pg_conn)["exchange"] == "coindcx"


def test_neither_exchange_nor_credentials_trades_on_paper(client: TestClient) -> None:
    response = client.post("/strategies/deploy", json=deploy_body())
    assert response.json()["exchange"] == "paper" and response.json()["has_credentials"] is False


def test_paper_with_credentials_keeps_them_sealed_for_a_later_switch(
    client: TestClient, pg_conn: psycopg.Connection
) -> None:
    response = client.post("/strategies/deploy", json=deploy_body(exchange="paper", api_key="k", api_secret="s"))
    assert response.status_code == 201, response.text
    assert response.json()["exchange"] == "paper" and response.json()["has_credentials"] is True
    (sealed,) = pg_conn.execute("SELECT credentials FROM strategy_credentials").fetchone()
    assert unseal(sealed) == ["s1", "k", "s"]


@pytest.mark.parametrize("exchange", [..., "paper"])
@pytest.mark.parametrize(("given", "missing"), [("api_key", "api_secret"), ("api_secret", "api_key")])
def test_one_credential_without_the_other_is_refused(
    client: TestClient, pg_conn: psycopg.Connection, exchange: Any, given: str, missing: str
) -> None:
    response = client.post("/strategies/deploy", json=deploy_body(exchange=exchange, **{given: "x"}))
    assert response.status_code == 422
    assert response.json()["detail"] == [{"field": missing, "reason": f"required with {given}: both or neither"}]
    assert pg_conn.execute("SELECT count(*) FROM strategies").fetchone() == (0,)


def test_an_api_key_belongs_to_one_user(client: TestClient, pg_conn: psycopg.Connection) -> None:
    mine = deploy_body(strategy_id="a", user_id="alice-7", api_key="PUBLIC-KEY", api_secret="s")
    assert client.post("/strategies/deploy", json=mine).status_code == 201
    # The same user may use the key for another strategy, or redeploy with it.
    assert client.post("/strategies/deploy", json={**mine, "strategy_id": "b"}).status_code == 201
    assert client.post("/strategies/deploy", json=mine).status_code == 200
    # Another user may not, with any secret, whatever the whitespace around the key (HTTP drops it).
    for key in ("PUBLIC-KEY", " PUBLIC-KEY\t"):
        theirs = deploy_body(strategy_id="c", user_id="mallory", api_key=key, api_secret="other")
        response = client.post("/strategies/deploy", json=theirs)
        assert response.status_code == 409, response.text
        assert response.json()["error"] == "conflict"
        assert "another user" in response.json()["message"]
        for hint in ("alice", '"a"', "'a'", "strategy a", "PUBLIC-KEY"):
            assert hint not in response.text
    assert pg_conn.execute("SELECT count(*) FROM strategies WHERE user_id = 'mallory'").fetchone() == (0,)
    # Once alice's strategies let go of the key (paper, no credentials), it is free for another user.
    for strategy_id in ("a", "b"):
        client.post("/strategies/deploy", json=deploy_body(strategy_id=strategy_id, user_id="alice-7"))
    theirs = deploy_body(strategy_id="c", user_id="mallory", api_key="PUBLIC-KEY", api_secret="other")
    assert client.post("/strategies/deploy", json=theirs).status_code == 201


def test_credentials_without_sealing_configured_are_refused(
    build_client: BuildClient, pg_conn: psycopg.Connection
) -> None:
    client = build_client(seal_credentials=None)
    response = client.post("/strategies/deploy", json=deploy_body(exchange="coindcx", api_key="k", api_secret="s"))
    assert response.status_code == 422
    assert "ENCRYPTION_KEY" in response.json()["detail"][0]["reason"]
    assert pg_conn.execute("SELECT count(*) FROM strategies").fetchone() == (0,)
    # Paper strategies need no sealing.
    assert client.post("/strategies/deploy", json=deploy_body()).status_code == 201


def test_a_failing_seal_is_a_503_that_does_not_leak(
    build_client: BuildClient, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(strategy_id: str, api_key: str, api_secret: str) -> tuple[str, bytes]:
        raise RuntimeError(f"cannot seal {api_secret}")

    client = build_client(seal_credentials=broken)
    body = deploy_body(exchange="coindcx", api_key="k", api_secret="SECRET-PLAINTEXT")
    response = client.post("/strategies/deploy", json=body)
    assert response.status_code == 503
    assert response.json()["error"] == "credentials_unavailable"
    assert "SECRET-PLAINTEXT" not in response.text
    assert "SECRET-PLAINTEXT" not in caplog.text


def test_code_that_does_not_compile_is_refused_with_line_and_column(
    client: TestClient, pg_conn: psycopg.Connection
) -> None:
    response = client.post("/strategies/deploy", json=deploy_body(code="x = 1\ndef f(:\n    pass\n"))
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "validation_error"
    (detail,) = body["detail"]
    assert detail["field"] == "code"
    assert (detail["line"], detail["column"]) == (2, 7)
    assert "line 2" in detail["reason"]
    assert pg_conn.execute("SELECT count(*) FROM strategies").fetchone() == (0,)


def test_the_injected_code_check_decides(build_client: BuildClient) -> None:
    def policy(code: str) -> None:
        if "import os" in code:
            raise PolicyError("module 'os' is not allowed", 1, 0)

    client = build_client(check_code=policy)
    response = client.post("/strategies/deploy", json=deploy_body(code="import os\n"))
    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert detail["reason"] == "module 'os' is not allowed (line 1, column 1)"
    assert (detail["line"], detail["column"]) == (1, 1)
    assert client.post("/strategies/deploy", json=deploy_body(code="import math\n")).status_code == 201


def test_redeploy_while_deletion_is_requested_is_a_conflict(client: TestClient, pg_conn: psycopg.Connection) -> None:
    client.post("/strategies/deploy", json=deploy_body())
    assert client.delete("/strategies/s1").status_code == 202
    response = client.post("/strategies/deploy", json=deploy_body(code="y = 2\n"))
    assert response.status_code == 409
    assert response.json()["error"] == "conflict"
    assert "being deleted" in response.json()["message"]
    assert strategy_row(pg_conn)["code"] == "x = 1\n"
    # Once a replica finalized the deletion, the id is free again.
    pg_conn.execute("DELETE FROM strategies WHERE strategy_id = 's1'")
    response = client.post("/strategies/deploy", json=deploy_body(code="y = 2\n"))
    assert response.status_code == 201
    assert strategy_row(pg_conn)["generation"] == 1


def test_redeploy_by_another_user_is_a_conflict(client: TestClient, pg_conn: psycopg.Connection) -> None:
    client.post("/strategies/deploy", json=deploy_body())
    response = client.post("/strategies/deploy", json=deploy_body(user_id="u2", code="y = 2\n"))
    assert response.status_code == 409
    assert "another user" in response.json()["message"]
    row = strategy_row(pg_conn)
    assert (row["user_id"], row["code"], row["generation"]) == ("u1", "x = 1\n", 1)


def assert_422(response: httpx.Response, *fields: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation_error"
    assert {d["field"] for d in body["detail"]} == set(fields), body
    assert all(d["reason"] for d in body["detail"])


def test_invalid_json(client: TestClient) -> None:
    assert_422(client.post("/strategies/deploy", content=b'{"user_id": '), "body")
    assert_422(client.post("/strategies/deploy", content=b""), "body")
    assert_422(client.post("/strategies/deploy", content=b"[1, 2]"), "body")
    assert_422(client.post("/strategies/deploy", content=b"\xff\xfe"), "body")


def test_wrong_types_missing_and_unknown_fields(client: TestClient, pg_conn: psycopg.Connection) -> None:
    assert_422(client.post("/strategies/deploy", json=deploy_body(execution_interval="5")), "execution_interval")
    assert_422(client.post("/strategies/deploy", json=deploy_body(config="{}")), "config")
    assert_422(client.post("/strategies/deploy", json=deploy_body(auto_start=1)), "auto_start")
    assert_422(client.post("/strategies/deploy", json=deploy_body(user_id=..., code=...)), "user_id", "code")
    assert_422(client.post("/strategies/deploy", json=deploy_body(extra=1)), "extra")
    assert_422(client.post("/strategies/deploy", json=deploy_body(exchange="binance")), "exchange")
    assert_422(client.post("/strategies/deploy", json=deploy_body(strategy_id="../etc")), "strategy_id")
    assert_422(client.post("/strategies/deploy", json=deploy_body(user_id="")), "user_id")
    assert_422(client.post("/strategies/deploy", json=deploy_body(code="x = '\x00'")), "code")
    assert_422(client.post("/strategies/deploy", json=deploy_body(config={"k": "\x00"})), "config")
    nan = b'{"user_id": "u1", "code": "x = 1", "execution_interval": 5, "config": {"k": NaN}}'
    assert_422(client.post("/strategies/deploy", content=nan), "config")
    assert pg_conn.execute("SELECT count(*) FROM strategies").fetchone() == (0,)


def test_interval_outside_the_settings_bounds(build_client: BuildClient) -> None:
    client = build_client(min_execution_interval=10, max_execution_interval=100)
    for interval in (0, 9, 101, -1):
        response = client.post("/strategies/deploy", json=deploy_body(execution_interval=interval))
        assert_422(response, "execution_interval")
        assert "between 10 and 100" in response.json()["detail"][0]["reason"]
    assert client.post("/strategies/deploy", json=deploy_body(execution_interval=10)).status_code == 201


def test_code_over_256_kb_is_413(client: TestClient, pg_conn: psycopg.Connection) -> None:
    code = "x = 1\n" + "#" * (256 * 1024)
    response = client.post("/strategies/deploy", json=deploy_body(code=code))
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert "code" in response.json()["message"]
    # Exactly at the limit is fine.
    code = "x = 1\n" + "#" * (256 * 1024 - 6)
    assert client.post("/strategies/deploy", json=deploy_body(code=code)).status_code == 201


def test_config_over_64_kb_is_413(client: TestClient) -> None:
    response = client.post("/strategies/deploy", json=deploy_body(config={"blob": "x" * (64 * 1024)}))
    assert response.status_code == 413
    assert "config" in response.json()["message"]


def test_body_over_512_kb_is_413_by_content_length(client: TestClient) -> None:
    response = client.post("/strategies/deploy", content=b" " * (512 * 1024 + 1))
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


def test_body_over_512_kb_is_413_when_streamed_without_a_length(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(600):
            yield b" " * 1024

    response = client.post("/strategies/deploy", content=chunks())
    assert response.status_code == 413


def test_a_streamed_body_within_the_limit_is_read_whole(client: TestClient) -> None:
    raw = json.dumps(deploy_body()).encode()

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(raw), 7):
            yield raw[i : i + 7]

    assert client.post("/strategies/deploy", content=chunks()).status_code == 201


def test_credentials_are_sealed_for_the_generated_strategy_id(client: TestClient, pg_conn: psycopg.Connection) -> None:
    body = deploy_body(strategy_id=..., exchange="coindcx", api_key="k", api_secret="s")
    strategy_id = client.post("/strategies/deploy", json=body).json()["strategy_id"]
    (sealed,) = pg_conn.execute("SELECT credentials FROM strategy_credentials").fetchone()
    assert unseal(sealed) == [strategy_id, "k", "s"]


def test_with_the_real_language_policy(build_client: BuildClient) -> None:
    policy = pytest.importorskip("reconciler.policy")  # merged from the sandbox branch
    client = build_client(check_code=policy.check_code)
    response = client.post("/strategies/deploy", json=deploy_body(code="x = 1\nimport os\n"))
    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert (detail["field"], detail["line"], detail["column"]) == ("code", 2, 1)
    response = client.post("/strategies/deploy", json=deploy_body(code="x = ().__class__\n"))
    assert response.status_code == 422
    response = client.post("/strategies/deploy", json=deploy_body(code="def f(:\n"))
    assert (response.json()["detail"][0]["line"], response.json()["detail"][0]["column"]) == (1, 7)
    assert client.post("/strategies/deploy", json=deploy_body(code="import math\nRESULT = 1\n")).status_code == 201
