"""Request and response bodies of the webhook routes (alerts), as named pydantic models."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from api.schemas import UserId, _Query, _Request, _Response, _storable

AlertEvent = Literal["halted", "resumed", "consecutive_failures", "order_filled", "order_refused", "execution_lost"]
MAX_URL_LENGTH = 2048


def _check_url(value: str) -> str:
    _storable(value)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PydanticCustomError("url_invalid", "must be an http:// or https:// URL with a host")
    return value


def _unique_events(value: list[AlertEvent]) -> list[AlertEvent]:
    return sorted(set(value))


# The target of a webhook, as both APIs take it (the executor API's snake_case, the tenant API's camelCase).
WebhookUrl = Annotated[
    str,
    Field(min_length=1, max_length=MAX_URL_LENGTH, description="http(s) URL the alerts are POSTed to."),
    AfterValidator(_check_url),
]
WebhookEvents = Annotated[
    list[AlertEvent], Field(min_length=1, description="Which events to send."), AfterValidator(_unique_events)
]


class WebhookCreate(_Request):
    user_id: UserId
    url: WebhookUrl
    events: WebhookEvents


class ListWebhooksQuery(_Query):
    user_id: UserId | None = None


class ListDeliveriesQuery(_Query):
    limit: int = Field(50, ge=1, le=500)


class Webhook(_Response):
    webhook_id: uuid.UUID
    user_id: str
    url: str
    events: list[str]
    created_at: datetime


class WebhookCreated(Webhook):
    secret: str = Field(
        description="The HMAC-SHA256 key of X-Executor-Signature. Shown once: it is stored sealed and never returned."
    )


class WebhookList(_Response):
    items: list[Webhook]


class DeliveryAttempt(_Response):
    attempt: int
    replica_id: str
    started_at: datetime
    finished_at: datetime | None
    status_code: int | None
    error: str | None


class AlertDelivery(_Response):
    delivery_id: uuid.UUID = Field(description="The event id every attempt carries (X-Executor-Event-Id).")
    event: str
    strategy_id: str | None
    payload: Any
    created_at: datetime
    attempts: int
    next_attempt_at: datetime
    delivered_at: datetime | None
    abandoned_at: datetime | None
    last_error: str | None
    attempt_log: list[DeliveryAttempt]


class AlertDeliveryList(_Response):
    items: list[AlertDelivery]


def webhook_record(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "events": list(record["events"])}


# --- the tenant API's spelling (camelCase; the user is the token's) ---------------------------------


class _Camel(_Response):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class TenantWebhookCreate(_Request):
    model_config = ConfigDict(alias_generator=to_camel, strict=True, extra="forbid", frozen=True)

    url: WebhookUrl
    events: WebhookEvents


class TenantWebhook(_Camel):
    webhook_id: uuid.UUID
    url: str
    events: list[str]
    created_at: datetime


class TenantWebhookCreated(TenantWebhook):
    secret: str = Field(description="The HMAC-SHA256 key of X-Executor-Signature; shown once, never returned again.")


class TenantWebhookList(_Camel):
    items: list[TenantWebhook]
