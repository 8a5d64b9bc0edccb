"""The request and response bodies of the executor API, as named pydantic models.

They are the contract the OpenAPI document (and the TypeScript client generated from it) is built
from, so each is explicit and named. Request bodies are strict (no type coercion, no unknown fields);
query strings are parsed leniently (they are text) but still refuse unknown parameters.
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from reconciler.exchange.keys import normalize_api_key
from reconciler.risk import RiskLimits, RiskSpecError

STRATEGY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
USER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$"

NO_NUL_PATTERN = r"^[^\x00]*$"  # PostgreSQL text and jsonb cannot hold U+0000
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
# Cursors (see api/pagination.py): `<microseconds since 1970>_<id>`. At most 17 digits: every such
# number of microseconds is a time a datetime can hold, so every string of this form is a position.
_CURSOR_TIME = r"[0-9]{1,17}"
STRATEGY_CURSOR_PATTERN = rf"^{_CURSOR_TIME}_[A-Za-z0-9][A-Za-z0-9_.-]{{0,63}}$"
UUID_CURSOR_PATTERN = rf"^{_CURSOR_TIME}_[0-9a-f]{{8}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{12}}$"

MAX_BODY_BYTES = 512 * 1024
MAX_CODE_BYTES = 256 * 1024
MAX_CONFIG_BYTES = 64 * 1024
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_WAIT_SECONDS = 60.0

Exchange = Literal["paper", "coindcx"]
DesiredState = Literal["running", "stopped"]
StrategyStatusName = Literal["pending", "running", "stopped", "error", "deleting", "halted"]
ExecutionStatus = Literal["running", "succeeded", "failed", "timed_out", "memory_exceeded", "lost", "interrupted"]
Trigger = Literal["schedule", "manual"]

StrategyId = Annotated[str, Field(pattern=STRATEGY_ID_PATTERN, examples=["my-strategy.v2"])]
UserId = Annotated[str, Field(pattern=USER_ID_PATTERN)]
Credential = Annotated[SecretStr, Field(min_length=1, max_length=1024)]


class _Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _integral_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # JSON Schema (and so the OpenAPI document, and JavaScript) counts 60.0 as an integer: take it
        # as 60 wherever an int is wanted. Strings ("60") stay refused, as strict mode wants.
        if isinstance(value, float) and value.is_integer() and info.field_name is not None:
            field = cls.model_fields.get(info.field_name)
            if field is not None and _wants_int(field.annotation):
                return int(value)
        return value


class _Query(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Response(BaseModel):
    model_config = ConfigDict(frozen=True)


def _storable(value: Any, where: str = "") -> None:
    """Refuse what PostgreSQL text and jsonb cannot hold, here rather than as a database error:
    U+0000 in any string, and NaN or infinite numbers (JSON has no such values; the parser allows them).
    """
    if isinstance(value, str):
        if "\x00" in value:
            raise PydanticCustomError(
                "nul_character", "must not contain NUL (U+0000) characters{where}", {"where": where}
            )
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise PydanticCustomError(
                "non_finite_number", "NaN and infinite numbers are not valid JSON{where}", {"where": where}
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable(key, where)
            _storable(item, f" (in {key[:40]!r})" if not where and "\x00" not in key else where)
    elif isinstance(value, list):
        for item in value:
            _storable(item, where)


def _wants_int(annotation: Any) -> bool:
    if annotation is int:
        return True
    return any(_wants_int(arg) for arg in get_args(annotation) if arg is not type(None))


def _integral(value: Any) -> Any:
    """JSON Schema counts 60.0 as an integer, and so do JavaScript clients: take it as 60 (not "60")."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# --- requests -------------------------------------------------------------------------------------


class RiskSpec(_Request):
    """Limits the broker enforces whatever the strategy's code does (see the README's risk section)."""

    max_daily_loss: float | None = Field(
        None, gt=0, description="Quote currency, realised plus unrealised, per UTC day."
    )
    max_drawdown_pct: float | None = Field(None, gt=0, lt=100, description="Percent below the equity's peak.")
    max_position: float | dict[str, float] | None = Field(
        None, description='Most of the traded coin held after a buy: one number, or {"BTCUSDT": 0.5, ...}.'
    )
    max_consecutive_failures: int | None = Field(None, ge=1)
    on_breach: Literal["stop", "pause"] = "stop"
    resume_after: int | None = Field(None, ge=1, le=30 * 86_400, description="Seconds a pause lasts.")
    currency: str = Field("USDT", pattern=r"^[A-Za-z0-9]{1,12}$", description="What equity is valued in.")

    @model_validator(mode="after")
    def _enforceable(self) -> RiskSpec:
        # One rule book: the replica's own parser decides what is enforceable.
        try:
            RiskLimits.parse(self.model_dump(exclude_none=True))
        except RiskSpecError as exc:
            raise PydanticCustomError("risk_invalid", "{reason}", {"reason": str(exc)}) from None
        return self


EXCHANGE_RULE = (
    "Where the strategy trades. Absent: 'coindcx' when api_key and api_secret are given (the seed "
    "backend's body), 'paper' when neither is. 'coindcx' requires both. 'paper' with both keeps them "
    "sealed for a later switch to live. api_key and api_secret come together: one without the other is a 422."
)

# The same rule for generated clients and property-based tests: JSON Schema conditionals on the body
# (an explicit null counts as absent, as it does on the server).
_CREDENTIALS_RULE: dict[str, Any] = {
    "allOf": [
        {
            "if": {"properties": {"api_key": {"type": "string"}}, "required": ["api_key"]},
            "then": {"properties": {"api_secret": {"type": "string"}}, "required": ["api_secret"]},
        },
        {
            "if": {"properties": {"api_secret": {"type": "string"}}, "required": ["api_secret"]},
            "then": {"properties": {"api_key": {"type": "string"}}, "required": ["api_key"]},
        },
        {
            "if": {"properties": {"exchange": {"const": "coindcx"}}, "required": ["exchange"]},
            "then": {
                "properties": {"api_key": {"type": "string"}, "api_secret": {"type": "string"}},
                "required": ["api_key", "api_secret"],
            },
        },
    ]
}


class DeployRequest(_Request):
    """Create a strategy, or replace the spec of an existing one (its generation is bumped)."""

    model_config = ConfigDict(json_schema_extra=_CREDENTIALS_RULE)

    strategy_id: StrategyId | None = Field(None, description="Generated (a UUID hex) when absent.")
    user_id: UserId
    name: str | None = Field(
        None, min_length=1, max_length=200, pattern=NO_NUL_PATTERN, description="Defaults to the strategy_id."
    )
    code: str = Field(
        min_length=1,
        description=f"Python source, at most {MAX_CODE_BYTES} bytes as UTF-8, that compiles under the sandbox's"
        " language policy (a 422 with line and column otherwise).",
        json_schema_extra={"format": "python-strategy"},
    )
    config: dict[str, Any] = Field(
        default_factory=dict,
        # No NUL anywhere in it: a rule a JSON Schema states only by recursion, which generated
        # TypeScript types cannot express, so it is said in words (and the contract test's hooks obey it).
        description=f"Exposed to the code as CONFIG; at most {MAX_CONFIG_BYTES} bytes as JSON; no string or key in it"
        " may contain U+0000 (PostgreSQL cannot store it).",
    )
    execution_interval: Annotated[int, BeforeValidator(_integral)] = Field(
        description="Seconds between runs, within the server's configured bounds."
    )
    exchange: Exchange | None = Field(None, description=EXCHANGE_RULE)
    api_key: Credential | None = Field(
        None,
        description="The exchange API key, with api_secret (both or neither); stored sealed, never returned. "
        "An API key belongs to one user: a key another user's strategy holds is refused with 409.",
    )
    api_secret: Credential | None = Field(
        None, description="The exchange API secret, with api_key (both or neither); stored sealed, never returned."
    )
    auto_start: bool = Field(True, description="desired_state is 'running' when true, 'stopped' otherwise.")
    risk: RiskSpec | None = Field(None, description="Risk limits; none when absent.")

    @field_validator("code", "name", "config")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        _storable(value)
        return value

    @field_validator("api_key")
    @classmethod
    def _api_key_as_the_exchange_reads_it(cls, value: SecretStr | None) -> SecretStr | None:
        # HTTP strips the whitespace around a header value: the exchange sees "KEY " as "KEY".
        if value is None:
            return None
        key = normalize_api_key(value.get_secret_value())
        if not key:
            raise PydanticCustomError("blank_api_key", "must not be blank")
        return SecretStr(key)

    @property
    def trades_on(self) -> Exchange:
        """The exchange the strategy trades on, by the rule in EXCHANGE_RULE."""
        if self.exchange is not None:
            return self.exchange
        return "coindcx" if self.api_key is not None and self.api_secret is not None else "paper"

    @field_validator("execution_interval")
    @classmethod
    def _interval_in_bounds(cls, value: int, info: ValidationInfo) -> int:
        low, high = (info.context or {}).get("interval_bounds", (1, None))
        if value < low or (high is not None and value > high):
            raise PydanticCustomError(
                "interval_out_of_range",
                "must be between {low} and {high} seconds",
                {"low": low, "high": high if high is not None else "any"},
            )
        return value


_CURSOR = "Opaque: the next_cursor of the previous page, echoed as it came."


class ListStrategiesQuery(_Query):
    limit: int = Field(DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    cursor: str | None = Field(None, description=_CURSOR, pattern=STRATEGY_CURSOR_PATTERN)
    user_id: UserId | None = None
    status: StrategyStatusName | None = None
    include_code: bool = False


class ListExecutionsQuery(_Query):
    limit: int = Field(DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    cursor: str | None = Field(None, description=_CURSOR, pattern=UUID_CURSOR_PATTERN)
    status: ExecutionStatus | None = None


class ListOrdersQuery(_Query):
    limit: int = Field(DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    cursor: str | None = Field(None, description=_CURSOR, pattern=UUID_CURSOR_PATTERN)


class ExecuteQuery(_Query):
    wait: float | None = Field(
        None,
        gt=0,
        le=MAX_WAIT_SECONDS,
        allow_inf_nan=False,
        description="Seconds to wait for the run to finish: 200 with the execution if it does, else 202.",
    )


# --- responses ------------------------------------------------------------------------------------


class FieldError(_Response):
    field: str = Field(description="Dotted path of the offending field; 'body' for the body as a whole.")
    reason: str
    line: int | None = Field(None, description="For code: the line of the error (1-based).")
    column: int | None = Field(None, description="For code: the column of the error (1-based).")


class ValidationErrorResponse(_Response):
    error: Literal["validation_error"] = "validation_error"
    message: str = "the request is invalid"
    detail: list[FieldError]


class ErrorResponse(_Response):
    error: str = Field(description="A stable machine-readable code, e.g. not_found, unauthorized.")
    message: str
    request_id: str | None = None


class LocalReplicaHealth(_Response):
    """The reconciler replica running in this process beside the API (`serve`), as it sees itself."""

    replica_id: str
    database_ok: bool
    running: bool
    in_flight: int = Field(description="Executions running, each in one of its slots.")
    claimed_waiting: int = Field(
        description="Executions it claimed ahead, waiting for a slot to free (they start the moment one does)."
    )
    executed: int
    last_error: str | None
    layers: dict[str, bool]


class HealthResponse(_Response):
    status: Literal["healthy", "unhealthy"]
    database: Literal["ok", "unavailable"]
    active_strategies: int | None = None
    scheduler_running: bool | None = Field(None, description="At least one replica holds an unexpired lease.")
    replicas: int | None = Field(None, description="Replicas with an unexpired lease.")
    sandbox_layers: dict[str, bool] = Field(
        default_factory=dict, description="Per isolation layer: active on every live replica."
    )
    reason: str | None = None
    replica: LocalReplicaHealth | None = Field(None, description="This process's own replica, when it runs one.")


class StrategyStats(_Response):
    total_executions: int
    successful_executions: int
    failed_executions: int
    avg_execution_time: float | None
    last_execution_at: datetime | None
    last_error: str | None
    last_execution_duration: float | None
    missed_executions: int
    consecutive_failures: int = 0


class Halt(_Response):
    """Why the risk guard halted the strategy: the limit, what it measured, and when."""

    # The guard records all three with every halt; a halt written otherwise (an operator's UPDATE, a
    # status upsert that proposes `halted` for a new row) may lack them: null, never a refusal to answer.
    limit: str | None = Field(
        description="The limit that tripped (e.g. max_daily_loss); null when the halt does not record it."
    )
    value: Decimal | None = Field(description="The measured value, as a string; null when not recorded.")
    threshold: Decimal | None = Field(description="The limit's value, as a string; null when not recorded.")
    halted_at: datetime
    resume_at: datetime | None = Field(description="When a pause ends by itself; null: until a person starts it.")

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Self:
        """From the status row's columns (`halt_limit`, ...), as the status and a refused run both read them."""
        return cls.model_validate(
            {
                "limit": record["halt_limit"],
                "value": record["halt_value"],
                "threshold": record["halt_threshold"],
                "halted_at": record["halted_at"],
                "resume_at": record["resume_at"],
            }
        )


class StrategyHaltedResponse(_Response):
    """409 for a run of a strategy its risk guard halted: the message in words, `halt` as the status has it."""

    error: Literal["strategy_halted"]
    message: str = Field(description="Since when, why, when it resumes and how to resume it.")
    halt: Halt

    @classmethod
    def refusing(cls, message: str, record: dict[str, Any]) -> Self:
        # Through a dict: a subclass names `halt` in its own convention (the tenant API's camelCase).
        halt = Halt.from_record(record).model_dump()
        return cls.model_validate({"error": "strategy_halted", "message": message, "halt": halt})


class StrategyStatus(_Response):
    strategy_id: str
    user_id: str
    name: str
    status: StrategyStatusName
    status_reason: str | None
    desired_state: DesiredState
    generation: int
    observed_generation: int
    execution_interval: int
    next_execution_at: datetime | None
    exchange: Exchange
    has_credentials: bool
    delete_requested_at: datetime | None
    created_at: datetime
    updated_at: datetime
    stats: StrategyStats
    risk: dict[str, Any] = Field(default_factory=dict)
    halt: Halt | None = None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> StrategyStatus:
        stats = StrategyStats.model_validate(
            {name: record[name] for name in StrategyStats.model_fields if name in record}
        )
        halt = None
        if record.get("status") == "halted" and record.get("halted_at") is not None:
            halt = Halt.from_record(record)
        return cls.model_validate({**record, "stats": stats, "halt": halt})


class StrategySummary(_Response):
    strategy_id: str
    user_id: str
    name: str
    status: StrategyStatusName
    desired_state: DesiredState
    generation: int
    execution_interval: int
    exchange: Exchange
    has_credentials: bool
    delete_requested_at: datetime | None
    created_at: datetime
    updated_at: datetime
    code: str | None = Field(None, description="Only with include_code=true.")


class Strategy(_Response):
    """A strategy's spec: everything deployed except the credentials, which are never returned."""

    strategy_id: str
    user_id: str
    name: str
    code: str
    config: dict[str, Any]
    risk: dict[str, Any] = Field(default_factory=dict)
    execution_interval: int
    exchange: Exchange
    desired_state: DesiredState
    generation: int
    status: StrategyStatusName
    has_credentials: bool
    delete_requested_at: datetime | None
    created_at: datetime
    updated_at: datetime


class StrategyList(_Response):
    items: list[StrategySummary]
    next_cursor: str | None = Field(description="Pass as cursor for the next page; null on the last page.")


class Execution(_Response):
    execution_id: uuid.UUID
    strategy_id: str
    status: ExecutionStatus
    trigger: Trigger
    scheduled_for: datetime
    claimed_at: datetime = Field(description="When a replica took it (its process starts a few ms later).")
    started_at: datetime | None = Field(
        description="When its process started: written with the outcome, so null while it runs (see claimed_at)."
    )
    finished_at: datetime | None
    duration: float | None
    output: str | None
    output_truncated: bool
    error: str | None
    result: Any = None
    replica_id: str
    generation: int


class ExecutionList(_Response):
    items: list[Execution]
    next_cursor: str | None


class RunRequest(_Response):
    """A manual run request: the one recorded, or the strategy's pending one that this request joined."""

    run_request_id: int
    strategy_id: str
    requested_at: datetime
    claimed_at: datetime | None
    execution_id: uuid.UUID | None
    already_pending: bool = Field(
        description="The strategy already had a run request waiting: this is that request (one execution"
        " answers it), not a new one."
    )
    request_count: int = Field(description="How many run requests this pending request stands for.")
    execution: Execution | None = Field(None, description="The execution so far, once a replica has claimed the run.")


class Order(_Response):
    order_id: uuid.UUID
    strategy_id: str
    execution_id: uuid.UUID | None
    exchange: Exchange
    client_order_id: str
    exchange_order_id: str | None
    market: str | None = Field(description="Null only for a request refused as malformed; see request.")
    side: Literal["buy", "sell"] | None = Field(description="Null only for a request refused as malformed.")
    order_type: str | None = Field(description="Null only for a request refused as malformed.")
    total_quantity: Decimal | None = Field(
        description="A decimal number, as a string; null only for a request refused as malformed."
    )
    price_per_unit: Decimal | None
    status: str
    error: str | None
    request: Any
    response: Any
    created_at: datetime
    updated_at: datetime


class OrderList(_Response):
    items: list[Order]
    next_cursor: str | None


class PaperBalance(_Response):
    currency: str
    balance: Decimal = Field(description="A decimal number, as a string.")
    locked_balance: Decimal = Field(description="Held by open limit orders; a decimal number, as a string.")


class PaperWallet(_Response):
    strategy_id: str
    starting: bool = Field(description="True until the strategy's first trade: the wallet it will start with.")
    balances: list[PaperBalance]


# --- validation errors as field/reason pairs ------------------------------------------------------

_REASONS = {
    "missing": "field required",
    "extra_forbidden": "unknown field",
}


def field_errors(exc: ValidationError, *, root: str = "body") -> list[FieldError]:
    """Pydantic's errors as {field, reason}; never echoes the input (it may hold a secret)."""
    errors = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = [str(part) for part in error["loc"]]
        field = ".".join(loc) if loc else root
        reason = _REASONS.get(error["type"], error["msg"])
        if error["type"] == "extra_forbidden" and root == "query":
            reason = "unknown query parameter"
        errors.append(FieldError(field=field, reason=reason))
    return errors
