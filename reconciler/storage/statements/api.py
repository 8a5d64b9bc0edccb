"""Every SQL statement the executor API runs, named and kept in one place.

The API writes desired state only (`strategies`, `strategy_credentials`, `run_requests`) and reads
the status tables the replicas write. Times come from the database clock (`now()`), never the app's.
Statements that take parameters known only per call (filters, cursors) are small functions returning
the statement; the rest are module constants.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Delete,
    Insert,
    Select,
    Update,
    and_,
    case,
    delete,
    exists,
    func,
    insert,
    literal,
    literal_column,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.sql.dml import ReturningDelete

from reconciler.tables import (
    alert_attempts,
    alert_deliveries,
    executions,
    orders,
    paper_balances,
    replicas,
    run_requests,
    strategies,
    strategy_credentials,
    webhooks,
)
from reconciler.tables import strategy_status as status_t

s = strategies

# The status a client sees: a deletion request wins, then what a replica last wrote, else pending.
DERIVED_STATUS: ColumnElement[str] = case(
    (s.c.delete_requested_at.is_not(None), literal("deleting")),
    else_=func.coalesce(status_t.c.status, literal("pending")),
)

HAS_CREDENTIALS: ColumnElement[bool] = exists().where(strategy_credentials.c.strategy_id == s.c.strategy_id)

_SPEC_JOIN = s.outerjoin(status_t, status_t.c.strategy_id == s.c.strategy_id)

SUMMARY_COLUMNS = (
    s.c.strategy_id,
    s.c.user_id,
    s.c.name,
    s.c.exchange,
    s.c.execution_interval,
    s.c.desired_state,
    s.c.generation,
    s.c.delete_requested_at,
    s.c.created_at,
    s.c.updated_at,
    DERIVED_STATUS.label("status"),
    HAS_CREDENTIALS.label("has_credentials"),
)

STATUS_COLUMNS = (
    *SUMMARY_COLUMNS,
    status_t.c.status_reason,
    func.coalesce(status_t.c.observed_generation, 0).label("observed_generation"),
    status_t.c.next_execution_at,
    func.coalesce(status_t.c.execution_count, 0).label("total_executions"),
    func.coalesce(status_t.c.successful_executions, 0).label("successful_executions"),
    func.coalesce(status_t.c.failed_executions, 0).label("failed_executions"),
    func.coalesce(status_t.c.missed_executions, 0).label("missed_executions"),
    status_t.c.avg_execution_time,
    status_t.c.last_execution_at,
    status_t.c.last_error,
    status_t.c.last_execution_duration,
    func.coalesce(status_t.c.consecutive_failures, 0).label("consecutive_failures"),
    s.c.risk,
    status_t.c.halted_at,
    status_t.c.halt_limit,
    status_t.c.halt_value,
    status_t.c.halt_threshold,
    status_t.c.resume_at,
)


# --- desired state: writes ----------------------------------------------------------------------


def upsert_strategy(values: dict[str, Any]) -> Insert:
    """Insert a spec, or replace an existing one and bump its generation.

    The conflict branch only fires for a strategy of the same user that is not being deleted; when it
    does not fire, nothing is returned and the caller reads the row to explain the conflict. `created`
    is true for an insert (`xmax = 0` holds only for a row version no transaction has updated).
    """
    stmt = pg_insert(s).values(**values)
    excluded = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[s.c.strategy_id],
        set_={
            "name": excluded.name,
            "code": excluded.code,
            "config": excluded.config,
            "risk": excluded.risk,
            "execution_interval": excluded.execution_interval,
            "exchange": excluded.exchange,
            "desired_state": excluded.desired_state,
            "generation": s.c.generation + 1,
            "updated_at": func.now(),
        },
        where=and_(s.c.delete_requested_at.is_(None), s.c.user_id == excluded.user_id),
    ).returning(s.c.strategy_id, literal_column("(xmax = 0)").label("created"))


def select_owner(strategy_id: str) -> Select[Any]:
    return select(s.c.user_id, s.c.delete_requested_at).where(s.c.strategy_id == strategy_id)


def upsert_credentials(strategy_id: str, key_id: str, sealed: bytes, api_key_digest: str | None = None) -> Insert:
    stmt = pg_insert(strategy_credentials).values(
        strategy_id=strategy_id, key_id=key_id, credentials=sealed, api_key_digest=api_key_digest
    )
    return stmt.on_conflict_do_update(
        index_elements=[strategy_credentials.c.strategy_id],
        set_={
            "key_id": stmt.excluded.key_id,
            "credentials": stmt.excluded.credentials,
            "api_key_digest": stmt.excluded.api_key_digest,
            "updated_at": func.now(),
        },
    )


def lock_api_key(api_key_digest: str) -> Select[Any]:
    """Serialise deploys of one exchange API key until commit, so two users cannot both claim it at once."""
    return select(func.pg_advisory_xact_lock(func.hashtextextended(literal("api-key:") + api_key_digest, 0)))


def api_key_held_by_another_user(api_key_digest: str, user_id: str) -> Select[Any]:
    """Whether a strategy of a user other than `user_id` holds this API key (never which one)."""
    held = (
        select(literal(1))
        .select_from(strategy_credentials.join(s, s.c.strategy_id == strategy_credentials.c.strategy_id))
        .where(strategy_credentials.c.api_key_digest == api_key_digest, s.c.user_id != user_id)
    )
    return select(exists(held))


def delete_credentials(strategy_id: str) -> Delete:
    return delete(strategy_credentials).where(strategy_credentials.c.strategy_id == strategy_id)


def set_desired_state(strategy_id: str, desired_state: str) -> Update:
    return (
        update(s)
        .where(s.c.strategy_id == strategy_id, s.c.delete_requested_at.is_(None))
        .values(
            desired_state=desired_state,
            generation=s.c.generation + 1,
            updated_at=func.now(),
            # An explicit start lifts a risk halt that happened before it (a halt is status; this is
            # the person's answer to it, on record in the spec).
            started_at=func.now() if desired_state == "running" else s.c.started_at,
        )
        .returning(s.c.strategy_id)
    )


def request_deletion(strategy_id: str) -> Update:
    """Mark a strategy for deletion (once: a repeated request changes nothing); replicas finalize it."""
    return (
        update(s)
        .where(s.c.strategy_id == strategy_id, s.c.delete_requested_at.is_(None))
        .values(delete_requested_at=func.now(), generation=s.c.generation + 1, updated_at=func.now())
        .returning(s.c.strategy_id)
    )


def insert_run_request(strategy_id: str) -> Insert:
    """A manual run of a strategy that exists and is not being deleted (nothing inserted otherwise).

    FOR KEY SHARE holds off a replica finalizing the deletion between this check and the insert.
    """
    live = (
        select(s.c.strategy_id)
        .where(s.c.strategy_id == strategy_id, s.c.delete_requested_at.is_(None))
        .with_for_update(key_share=True)
    )
    return insert(run_requests).from_select(["strategy_id"], live).returning(*run_requests.c)


# --- reads ----------------------------------------------------------------------------------------


def select_spec(strategy_id: str) -> Select[Any]:
    return (
        select(*SUMMARY_COLUMNS, s.c.code, s.c.config, s.c.risk)
        .select_from(_SPEC_JOIN)
        .where(s.c.strategy_id == strategy_id)
    )


def select_status(strategy_id: str) -> Select[Any]:
    return select(*STATUS_COLUMNS).select_from(_SPEC_JOIN).where(s.c.strategy_id == strategy_id)


def select_strategy_exists(strategy_id: str) -> Select[Any]:
    return select(s.c.strategy_id, s.c.exchange).where(s.c.strategy_id == strategy_id)


def select_paper_balances(strategy_id: str) -> Select[Any]:
    b = paper_balances
    return (
        select(b.c.currency, b.c.balance, b.c.locked_balance)
        .where(b.c.strategy_id == strategy_id)
        .order_by(b.c.currency)
    )


def list_strategies(
    *,
    limit: int,
    after: tuple[datetime, str] | None,
    user_id: str | None,
    status: str | None,
    include_code: bool,
) -> Select[Any]:
    """Newest first; keyset-paginated on (created_at, strategy_id)."""
    columns = (*SUMMARY_COLUMNS, s.c.code) if include_code else SUMMARY_COLUMNS
    stmt = select(*columns).select_from(_SPEC_JOIN)
    if user_id is not None:
        stmt = stmt.where(s.c.user_id == user_id)
    if status is not None:
        stmt = stmt.where(DERIVED_STATUS == status)  # noqa: SIM300
    if after is not None:
        stmt = stmt.where(tuple_(s.c.created_at, s.c.strategy_id) < tuple_(literal(after[0]), literal(after[1])))
    return stmt.order_by(s.c.created_at.desc(), s.c.strategy_id.desc()).limit(limit)


def list_executions(
    strategy_id: str, *, limit: int, after: tuple[datetime, uuid.UUID] | None, status: str | None
) -> Select[Any]:
    """Newest first; keyset-paginated on (scheduled_for, execution_id)."""
    e = executions
    stmt = select(*e.c).where(e.c.strategy_id == strategy_id)
    if status is not None:
        stmt = stmt.where(e.c.status == status)
    if after is not None:
        stmt = stmt.where(tuple_(e.c.scheduled_for, e.c.execution_id) < tuple_(literal(after[0]), literal(after[1])))
    return stmt.order_by(e.c.scheduled_for.desc(), e.c.execution_id.desc()).limit(limit)


def select_execution(execution_id: uuid.UUID) -> Select[Any]:
    return select(*executions.c).where(executions.c.execution_id == execution_id)


def select_run_request(run_request_id: int) -> Select[Any]:
    return select(*run_requests.c).where(run_requests.c.run_request_id == run_request_id)


def list_orders(strategy_id: str, *, limit: int, after: tuple[datetime, uuid.UUID] | None) -> Select[Any]:
    """Newest first; keyset-paginated on (created_at, order_id)."""
    o = orders
    stmt = select(*o.c).where(o.c.strategy_id == strategy_id)
    if after is not None:
        stmt = stmt.where(tuple_(o.c.created_at, o.c.order_id) < tuple_(literal(after[0]), literal(after[1])))
    return stmt.order_by(o.c.created_at.desc(), o.c.order_id.desc()).limit(limit)


# --- health -------------------------------------------------------------------------------------

COUNT_ACTIVE_STRATEGIES = (
    select(func.count()).select_from(s).where(s.c.desired_state == "running", s.c.delete_requested_at.is_(None))
)

# A replica is alive while its lease has not expired by the database's clock.
SELECT_LIVE_REPLICAS = select(replicas.c.replica_id, replicas.c.sandbox_layers).where(
    replicas.c.lease_expires_at > func.now()
)


# --- webhooks (desired state: the API writes them; replicas read them to send alerts) -------------


def insert_webhook(values: dict[str, Any]) -> Insert:
    w = webhooks
    return insert(w).values(**values).returning(w.c.webhook_id, w.c.user_id, w.c.url, w.c.events, w.c.created_at)


def list_webhooks(user_id: str | None) -> Select[Any]:
    w = webhooks
    stmt = select(w.c.webhook_id, w.c.user_id, w.c.url, w.c.events, w.c.created_at)
    if user_id is not None:
        stmt = stmt.where(w.c.user_id == user_id)
    return stmt.order_by(w.c.created_at.desc(), w.c.webhook_id).limit(500)


def select_webhook(webhook_id: uuid.UUID) -> Select[Any]:
    w = webhooks
    return select(w.c.webhook_id, w.c.user_id, w.c.url, w.c.events, w.c.created_at).where(w.c.webhook_id == webhook_id)


def delete_webhook(webhook_id: uuid.UUID) -> ReturningDelete[Any]:
    w = webhooks
    return (
        delete(w)
        .where(w.c.webhook_id == webhook_id)
        .returning(w.c.webhook_id, w.c.user_id, w.c.url, w.c.events, w.c.created_at)
    )


def list_deliveries(webhook_id: uuid.UUID, limit: int) -> Select[Any]:
    """A webhook's deliveries, newest first, each with its attempts as a JSON list."""
    d, a = alert_deliveries, alert_attempts
    attempts = (
        select(
            func.coalesce(
                func.jsonb_agg(
                    aggregate_order_by(
                        func.jsonb_build_object(
                            "attempt",
                            a.c.attempt,
                            "replica_id",
                            a.c.replica_id,
                            "started_at",
                            a.c.started_at,
                            "finished_at",
                            a.c.finished_at,
                            "status_code",
                            a.c.status_code,
                            "error",
                            a.c.error,
                        ),
                        a.c.attempt_id,
                    )
                ),
                literal_column("'[]'::jsonb"),
            )
        )
        .where(a.c.delivery_id == d.c.delivery_id)
        .scalar_subquery()
    )
    return (
        select(
            d.c.delivery_id,
            d.c.event,
            d.c.strategy_id,
            d.c.payload,
            d.c.created_at,
            d.c.attempts,
            d.c.next_attempt_at,
            d.c.delivered_at,
            d.c.abandoned_at,
            d.c.last_error,
            attempts.label("attempt_log"),
        )
        .where(d.c.webhook_id == webhook_id)
        .order_by(d.c.created_at.desc(), d.c.delivery_id)
        .limit(limit)
    )


# --- the tenant API: a user's own deployments -------------------------------------------------------


def select_owned(strategy_id: str, user_id: str) -> Select[Any]:
    """The strategy, if it belongs to `user_id`: another user's answers exactly like a missing one."""
    return select(s.c.strategy_id).where(s.c.strategy_id == strategy_id, s.c.user_id == user_id)


def select_live_by_name(user_id: str, name: str) -> Select[Any]:
    """The user's newest strategy of that name that is not being deleted (a redeploy by name)."""
    return (
        select(s.c.strategy_id)
        .where(s.c.user_id == user_id, s.c.name == name, s.c.delete_requested_at.is_(None))
        .order_by(s.c.created_at.desc(), s.c.strategy_id.desc())
        .limit(1)
    )


def list_user_status(user_id: str, *, limit: int, after: tuple[datetime, str] | None) -> Select[Any]:
    """A user's strategies with status and statistics, newest first; keyset-paginated like list_strategies."""
    stmt = select(*STATUS_COLUMNS).select_from(_SPEC_JOIN).where(s.c.user_id == user_id)
    if after is not None:
        stmt = stmt.where(tuple_(s.c.created_at, s.c.strategy_id) < tuple_(literal(after[0]), literal(after[1])))
    return stmt.order_by(s.c.created_at.desc(), s.c.strategy_id.desc()).limit(limit)


def select_recent_outcomes(strategy_ids: list[str], per_strategy: int) -> Select[Any]:
    """The last `per_strategy` executions of each strategy (times and outcome only), newest first."""
    e = executions
    rank = (
        func.row_number()
        .over(partition_by=e.c.strategy_id, order_by=(e.c.scheduled_for.desc(), e.c.execution_id.desc()))
        .label("rank")
    )
    ranked = (
        select(e.c.strategy_id, e.c.execution_id, e.c.status, e.c.scheduled_for, e.c.finished_at, e.c.duration, rank)
        .where(e.c.strategy_id.in_(strategy_ids))
        .subquery()
    )
    return (
        select(*(c for c in ranked.c if c.name != "rank"))
        .where(ranked.c.rank <= per_strategy)
        .order_by(ranked.c.strategy_id, ranked.c.scheduled_for.desc(), ranked.c.execution_id.desc())
    )


def select_strategy_state(strategy_id: str) -> Select[Any]:
    return select(status_t.c.state).where(status_t.c.strategy_id == strategy_id)


def select_wallet_history(strategy_id: str, *, limit: int) -> Select[Any]:
    """The last `limit` wallet values recorded by paper executions, newest first."""
    e = executions
    return (
        select(e.c.finished_at, e.c.wallet_value, e.c.wallet_currency, e.c.execution_id)
        .where(e.c.strategy_id == strategy_id, e.c.wallet_value.is_not(None), e.c.finished_at.is_not(None))
        .order_by(e.c.finished_at.desc())
        .limit(limit)
    )
