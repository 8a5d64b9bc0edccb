"""The tenant API's bodies, in the camelCase the platform's frontend already uses.

Requests are strict (no coercion, no unknown fields) like the executor API's; responses are built
from the same store records, renamed. Field names in validation errors are the camelCase ones.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from api.schemas import (
    DEFAULT_PAGE_SIZE,
    MAX_CODE_BYTES,
    MAX_CONFIG_BYTES,
    STRATEGY_ID_PATTERN,
    Credential,
    DesiredState,
    Exchange,
    ExecutionStatus,
    Halt,
    StrategyHaltedResponse,
    StrategyStatusName,
    Trigger,
    _storable,
)

MAX_DEPLOYMENTS_PAGE = 200


def _title(name: str, _info: object) -> str:
    """Titles from the Python names ("Execution interval"), not the squashed aliases ("Executioninterval")."""
    return name.replace("_", " ").capitalize()


class _Camel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, field_title_generator=_title
    )


class _CamelRequest(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, strict=True, extra="forbid", frozen=True, field_title_generator=_title
    )


# --- requests -------------------------------------------------------------------------------------


class BotStartRequest(_CamelRequest):
    """Deploy a bot and start it, redeploy one (new code or settings), or start a stopped one.

    - `{name, code, executionInterval, ...}`: deploy; when the user already has a bot of that name
      (not being deleted) it is redeployed in place.
    - `{deploymentId, name, code, executionInterval, ...}`: redeploy that bot.
    - `{deploymentId}` alone: start that bot again with its current code.
    """

    deployment_id: str | None = Field(None, pattern=STRATEGY_ID_PATTERN)
    name: str | None = Field(None, min_length=1, max_length=200)
    code: str | None = Field(None, min_length=1, description=f"Python source, at most {MAX_CODE_BYTES} bytes.")
    config: dict[str, Any] | None = Field(None, description=f"CONFIG; at most {MAX_CONFIG_BYTES} bytes as JSON.")
    execution_interval: int | None = Field(None, description="Seconds between runs, within the server's bounds.")
    exchange: Exchange | None = Field(
        None,
        description="Absent: 'coindcx' when apiKey and apiSecret are given, 'paper' when neither is. 'coindcx' "
        "requires both; 'paper' with both keeps them sealed for a later switch to live.",
    )
    api_key: Credential | None = Field(
        None, description="With apiSecret (both or neither); stored sealed, never returned."
    )
    api_secret: Credential | None = Field(None, description="With apiKey; stored sealed, never returned.")
    risk: dict[str, Any] | None = Field(
        None, description="Risk limits (the executor API's `risk` object, its keys as they are there)."
    )

    @model_validator(mode="after")
    def _deploy_or_start(self) -> BotStartRequest:
        for value in (self.name, self.code, self.config):
            _storable(value)
        given = {n: getattr(self, n) is not None for n in ("name", "code", "execution_interval")}
        if any(given.values()) or self.deployment_id is None:
            missing = [to_camel(n) for n, present in given.items() if not present]
            if missing:
                raise ValueError(f"{', '.join(missing)} required to deploy (or send deploymentId alone to start a bot)")
        elif any(getattr(self, n) is not None for n in ("config", "exchange", "api_key", "api_secret", "risk")):
            raise ValueError("to change a bot's settings, redeploy it with name, code and executionInterval")
        return self


class BotStopRequest(_CamelRequest):
    deployment_id: str = Field(pattern=STRATEGY_ID_PATTERN)


class DeploymentsQuery(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, extra="forbid", frozen=True, field_title_generator=_title)

    limit: int = Field(DEFAULT_PAGE_SIZE, ge=1, le=MAX_DEPLOYMENTS_PAGE)
    cursor: str | None = Field(None, description="nextCursor of the previous page.")


# --- responses ------------------------------------------------------------------------------------


class ExecutionPoint(_Camel):
    """One recent execution, for charts: when, how long, how it ended."""

    execution_id: uuid.UUID
    status: ExecutionStatus
    scheduled_for: datetime
    finished_at: datetime | None
    duration: float | None


class Deployment(_Camel):
    """A bot with its status and statistics."""

    deployment_id: str
    name: str
    status: StrategyStatusName
    status_reason: str | None
    desired_state: DesiredState
    exchange: Exchange
    has_credentials: bool
    execution_interval: int
    next_execution_at: datetime | None
    execution_count: int
    successful_executions: int
    failed_executions: int
    missed_executions: int
    avg_execution_time: float | None = Field(description="Seconds, over every execution.")
    last_execution_duration: float | None = Field(description="Seconds.")
    last_execution_at: datetime | None
    last_error: str | None
    generation: int
    observed_generation: int
    created_at: datetime
    updated_at: datetime
    risk: dict[str, Any] = Field(default_factory=dict, description="The bot's risk limits.")
    halted_at: datetime | None = Field(None, description="While halted: when a risk limit halted it.")
    resume_at: datetime | None = Field(None, description="While paused: when it resumes by itself.")
    recent_executions: list[ExecutionPoint] = Field(
        default_factory=list, description="The last executions, newest first (in lists: times and outcomes)."
    )

    @classmethod
    def from_record(cls, record: dict[str, Any], recent: list[dict[str, Any]] | None = None) -> Deployment:
        return cls.model_validate(_deployment_fields(record) | {"recent_executions": recent or []})


class BotExecution(_Camel):
    execution_id: uuid.UUID
    status: ExecutionStatus
    trigger: Trigger
    scheduled_for: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration: float | None
    output: str | None
    output_truncated: bool
    error: str | None = Field(description="The exception and traceback, in the strategy's own line numbers.")
    result: Any = None
    replica_id: str
    generation: int
    wallet_value: Decimal | None = Field(None, description="Paper bots: the wallet's value when the run ended.")
    wallet_currency: str | None = None


class BotOrder(_Camel):
    order_id: uuid.UUID
    execution_id: uuid.UUID | None
    exchange: Exchange
    client_order_id: str
    exchange_order_id: str | None
    market: str
    side: Literal["buy", "sell"]
    order_type: str
    total_quantity: Decimal
    price_per_unit: Decimal | None
    status: str
    error: str | None
    created_at: datetime
    updated_at: datetime


class WalletBalance(_Camel):
    currency: str
    balance: Decimal
    locked_balance: Decimal


class WalletPoint(_Camel):
    at: datetime
    value: Decimal
    currency: str
    execution_id: uuid.UUID


class Wallet(_Camel):
    """A paper bot's wallet now, and its value when each recent execution ended (oldest first)."""

    starting: bool = Field(description="True until the bot's first trade: the wallet it starts with.")
    balances: list[WalletBalance]
    value_history: list[WalletPoint]


class DeploymentDetail(Deployment):
    """A bot in full: its code and config, persisted STATE, recent executions and orders, and the
    wallet of a paper bot (null for a live one, whose balances are on the exchange)."""

    code: str
    config: dict[str, Any]
    state: Any = Field(description="The STATE dict the bot persisted between runs.")
    recent_executions: list[BotExecution] = Field(default_factory=list)  # type: ignore[assignment]
    recent_orders: list[BotOrder]
    wallet: Wallet | None


class DeploymentList(_Camel):
    items: list[Deployment]
    next_cursor: str | None


class BotRunRequest(_Camel):
    """A run request: the one recorded, or the bot's pending one that this request joined."""

    run_request_id: int
    deployment_id: str
    requested_at: datetime
    already_pending: bool = Field(
        description="The bot already had a run waiting to start: this is that request, not a new one."
    )
    request_count: int = Field(description="How many run requests this pending request stands for.")


class BotHalt(Halt):
    """Why the risk limits halted the bot: the executor API's `halt`, in camelCase."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, field_title_generator=_title
    )


class BotHaltedResponse(StrategyHaltedResponse):
    """409 for a run of a bot its risk limits halted: the message in words, `halt` as figures."""

    halt: BotHalt


def _deployment_fields(record: dict[str, Any]) -> dict[str, Any]:
    return {
        **record,
        "deployment_id": record["strategy_id"],
        "execution_count": record["total_executions"],
    }


def detail(record: dict[str, Any], initial_balances: dict[str, float]) -> DeploymentDetail:
    wallet = None
    if record["exchange"] == "paper":
        rows = record["balances"]
        balances = rows or [
            {"currency": c, "balance": Decimal(str(a)), "locked_balance": Decimal(0)}
            for c, a in sorted(initial_balances.items())
        ]
        history = [
            {"at": p["finished_at"], "value": p["wallet_value"], "currency": p["wallet_currency"],
             "execution_id": p["execution_id"]}
            for p in record["wallet_history"]
        ]  # fmt: skip
        wallet = Wallet(
            starting=not rows,
            balances=[WalletBalance.model_validate(b) for b in balances],
            value_history=[WalletPoint.model_validate(p) for p in history],
        )
    return DeploymentDetail.model_validate(
        _deployment_fields(record)
        | {
            "recent_executions": record["executions"],
            "recent_orders": record["orders"],
            "wallet": wallet,
        }
    )
