"""The webhook routes: register where alerts go, list them, remove them, read their deliveries.

A webhook is desired state (the API writes it, replicas only read it). Its signing secret is made
here, returned once in the 201, and stored sealed with ENCRYPTION_KEY; it is never returned again.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from api.errors import ApiError, NotFound, RequestInvalid
from api.routes import Endpoint, parse_query, read_body, respond
from api.schemas import field_errors
from api.webhook_schemas import (
    AlertDelivery,
    AlertDeliveryList,
    ListDeliveriesQuery,
    ListWebhooksQuery,
    TenantWebhook,
    TenantWebhookCreate,
    TenantWebhookCreated,
    TenantWebhookList,
    Webhook,
    WebhookCreate,
    WebhookCreated,
    WebhookList,
    webhook_record,
)
from reconciler.storage.api_store import Store
from reconciler.webhook_secrets import new_secret

log = logging.getLogger("api")

# (webhook_id, secret) -> (key_id, ciphertext)
SealSecret = Callable[[uuid.UUID, str], tuple[str, bytes]]
MAX_WEBHOOK_BODY = 16 * 1024


class WebhookApi:
    def __init__(
        self, store: Store, *, seal_secret: SealSecret | None, tenant_user: Callable[[Request], str] | None = None
    ) -> None:
        self.store = store
        self.seal_secret = seal_secret
        # The tenant API's "who is asking" (the JWT's subject); None: no tenant routes answer.
        self.tenant_user = tenant_user

    async def create_webhook(self, request: Request) -> Response:
        body = await read_body(request, MAX_WEBHOOK_BODY)
        try:
            create = WebhookCreate.model_validate_json(body)
        except ValidationError as exc:
            raise RequestInvalid(field_errors(exc)) from None
        record, secret = await self._create(create.user_id, create.url, list(create.events))
        return respond(WebhookCreated.model_validate({**webhook_record(record), "secret": secret}), 201)

    async def _create(self, user_id: str, url: str, events: list[str]) -> tuple[dict[str, object], str]:
        if self.seal_secret is None:
            raise RequestInvalid.one(
                "body", "this server cannot store webhook secrets (no ENCRYPTION_KEY is configured)"
            )
        webhook_id = uuid.uuid4()
        secret = new_secret()
        try:
            key_id, sealed = self.seal_secret(webhook_id, secret)
        except Exception as exc:
            log.error("sealing a webhook secret failed: %s", type(exc).__name__)
            raise ApiError(503, "credentials_unavailable", "the webhook secret could not be sealed") from None
        record = await self.store.create_webhook(
            webhook_id=webhook_id, user_id=user_id, url=url, events=events, key_id=key_id, sealed=sealed
        )
        log.info("webhook %s created for user %s (events %s)", webhook_id, user_id, ",".join(events))
        return record, secret

    async def list_webhooks(self, request: Request) -> Response:
        query = parse_query(request, ListWebhooksQuery)
        rows = await self.store.list_webhooks(query.user_id)
        return respond(WebhookList(items=[Webhook.model_validate(webhook_record(r)) for r in rows]))

    async def get_webhook(self, request: Request) -> Response:
        webhook_id = _webhook_id(request)
        record = await self.store.get_webhook(webhook_id)
        if record is None:
            raise NotFound(f"no webhook {webhook_id}")
        return respond(Webhook.model_validate(webhook_record(record)))

    async def delete_webhook(self, request: Request) -> Response:
        webhook_id = _webhook_id(request)
        record = await self.store.delete_webhook(webhook_id)
        if record is None:
            raise NotFound(f"no webhook {webhook_id}")
        log.info("webhook %s deleted", webhook_id)
        return respond(Webhook.model_validate(webhook_record(record)))

    async def list_webhook_deliveries(self, request: Request) -> Response:
        webhook_id = _webhook_id(request)
        query = parse_query(request, ListDeliveriesQuery)
        rows = await self.store.list_deliveries(webhook_id, limit=query.limit)
        if rows is None:
            raise NotFound(f"no webhook {webhook_id}")
        return respond(AlertDeliveryList(items=[AlertDelivery.model_validate(r) for r in rows]))

    # --- the tenant API: the same, for the token's user only -----------------------------------------

    async def create_my_webhook(self, request: Request) -> Response:
        user_id = self._user_of(request)
        body = await read_body(request, MAX_WEBHOOK_BODY)
        try:
            create = TenantWebhookCreate.model_validate_json(body)
        except ValidationError as exc:
            raise RequestInvalid(field_errors(exc)) from None
        record, secret = await self._create(user_id, create.url, list(create.events))
        return _camel(TenantWebhookCreated.model_validate({**webhook_record(record), "secret": secret}), 201)

    async def list_my_webhooks(self, request: Request) -> Response:
        rows = await self.store.list_webhooks(self._user_of(request))
        return _camel(TenantWebhookList(items=[TenantWebhook.model_validate(webhook_record(r)) for r in rows]))

    async def delete_my_webhook(self, request: Request) -> Response:
        user_id = self._user_of(request)
        webhook_id = _webhook_id(request)
        record = await self.store.get_webhook(webhook_id)
        # Another user's webhook answers exactly like a missing one.
        if record is None or record["user_id"] != user_id:
            raise NotFound(f"no webhook {webhook_id}")
        deleted = await self.store.delete_webhook(webhook_id)
        if deleted is None:
            raise NotFound(f"no webhook {webhook_id}")
        log.info("webhook %s deleted by its user", webhook_id)
        return _camel(TenantWebhook.model_validate(webhook_record(deleted)))

    def _user_of(self, request: Request) -> str:
        if self.tenant_user is None:
            raise ApiError(503, "auth_not_configured", "the tenant API is unavailable")
        return self.tenant_user(request)

    def tenant_endpoints(self) -> list[Endpoint]:
        return [
            Endpoint(
                "POST",
                "/api/webhooks",
                self.create_my_webhook,
                "Register a webhook for your bots' alerts; its signing secret is returned once",
                {201: TenantWebhookCreated},
                body=TenantWebhookCreate,
                errors=(413, 422),
                tenant=True,
            ),
            Endpoint(
                "GET", "/api/webhooks", self.list_my_webhooks, "Your webhooks", {200: TenantWebhookList}, tenant=True
            ),
            Endpoint(
                "DELETE",
                "/api/webhooks/{webhook_id}",
                self.delete_my_webhook,
                "Delete one of your webhooks",
                {200: TenantWebhook},
                tenant=True,
            ),
        ]

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint(
                "POST",
                "/webhooks",
                self.create_webhook,
                "Register a webhook for alerts; its signing secret is returned once",
                {201: WebhookCreated},
                body=WebhookCreate,
                errors=(413, 422),
            ),
            Endpoint(
                "GET", "/webhooks", self.list_webhooks, "List webhooks", {200: WebhookList}, query=ListWebhooksQuery
            ),
            Endpoint(
                "GET", "/webhooks/{webhook_id}", self.get_webhook, "One webhook (never its secret)", {200: Webhook}
            ),
            Endpoint(
                "DELETE",
                "/webhooks/{webhook_id}",
                self.delete_webhook,
                "Delete a webhook and its pending alerts",
                {200: Webhook},
            ),
            Endpoint(
                "GET",
                "/webhooks/{webhook_id}/deliveries",
                self.list_webhook_deliveries,
                "A webhook's alerts, newest first, with every delivery attempt",
                {200: AlertDeliveryList},
                query=ListDeliveriesQuery,
            ),
        ]


def _camel(model: BaseModel, status: int = 200) -> Response:
    return Response(model.model_dump_json(by_alias=True), status_code=status, media_type="application/json")


def _webhook_id(request: Request) -> uuid.UUID:
    raw = request.path_params["webhook_id"]
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise RequestInvalid.one("webhook_id", "must be a UUID") from None
