"""What a replica writes, simulated with plain SQL, so API tests can read status back."""

from __future__ import annotations

import uuid

import psycopg


def write_status(conn: psycopg.Connection, strategy_id: str = "s1", **columns: object) -> None:
    values = {"status": "running", "observed_generation": 1, **columns}
    names = ", ".join(values)
    marks = ", ".join(["%s"] * len(values))
    conn.execute(
        f"INSERT INTO strategy_status (strategy_id, {names}) VALUES (%s, {marks}) "
        f"ON CONFLICT (strategy_id) DO UPDATE SET ({names}) = ({marks})",
        (strategy_id, *values.values(), *values.values()),
    )


def write_execution(
    conn: psycopg.Connection,
    strategy_id: str = "s1",
    *,
    status: str = "succeeded",
    trigger: str = "schedule",
    scheduled_for: str = "2026-01-01T00:00:00Z",
    output: str = "hello\n",
    result: str | None = '{"signal": "buy"}',
    error: str | None = None,
) -> uuid.UUID:
    finished = "NULL" if status == "running" else "now()"
    # A running one is made its strategy's in-flight one in the same statement, as a claim does (the
    # database demands it: fk_executions_in_flight).
    (execution_id,) = conn.execute(
        "WITH e AS (INSERT INTO executions (strategy_id, trigger, scheduled_for, generation, status, replica_id, "
        "started_at, finished_at, duration, output, error, result) "
        f"VALUES (%s, %s, %s, 1, %s, 'replica-a', now(), {finished}, 0.25, %s, %s, %s::jsonb) "
        "RETURNING execution_id, strategy_id, status), "
        "p AS (INSERT INTO strategy_status (strategy_id, running_execution_id) "
        "      SELECT strategy_id, execution_id FROM e WHERE status = 'running' "
        "      ON CONFLICT (strategy_id) DO UPDATE SET running_execution_id = EXCLUDED.running_execution_id) "
        "SELECT execution_id FROM e",
        (strategy_id, trigger, scheduled_for, status, output, error, result),
    ).fetchone()
    return execution_id


def write_replica(conn: psycopg.Connection, replica_id: str, *, layers: str = "{}", lease: str = "30 seconds") -> None:
    conn.execute(
        "INSERT INTO replicas (replica_id, hostname, pid, slots, version, sandbox_layers, lease_expires_at) "
        "VALUES (%s, 'host', 1, 5, '0.1.0', %s::jsonb, now() + %s::interval)",
        (replica_id, layers, lease),
    )


def write_order(
    conn: psycopg.Connection, strategy_id: str = "s1", *, client_order_id: str, execution_id: uuid.UUID | None = None
) -> uuid.UUID:
    (order_id,) = conn.execute(
        "INSERT INTO orders (strategy_id, execution_id, exchange, client_order_id, market, side, order_type, "
        "total_quantity, price_per_unit, status, request) "
        "VALUES (%s, %s, 'paper', %s, 'BTCUSDT', 'buy', 'limit_order', 0.015, 65000.5, 'open', '{}'::jsonb) "
        "RETURNING order_id",
        (strategy_id, execution_id, client_order_id),
    ).fetchone()
    return order_id
