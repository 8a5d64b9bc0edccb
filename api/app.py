"""The app factory: the executor API, the tenant API, the dashboard and the API's description.

The caller owns the engine and the Store; the app only uses them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.auth import BearerAuthMiddleware
from api.dashboard import Dashboard, is_dashboard_path
from api.docs import view as docs_view
from api.errors import EXCEPTION_HANDLERS, RequestIdMiddleware
from api.openapi import build_openapi
from api.routes import CheckCode, Endpoint, ExecutorApi, Handler, LocalReplica
from api.security_headers import SecurityHeadersMiddleware
from api.tenant import TenantApi
from api.tenant_auth import TenantAuth
from api.webhooks import SealSecret, WebhookApi
from reconciler import __version__, metrics
from reconciler.policy.pool import CompileLimits, CompilePool
from reconciler.settings import Settings
from reconciler.storage.api_store import Store


def create_app(
    settings: Settings,
    store: Store,
    *,
    # (strategy_id, api_key, api_secret) -> (key_id, ciphertext); None: coindcx deploys are refused.
    seal_credentials: Callable[[str, str, str], tuple[str, bytes]] | None = None,
    # The language policy's deploy-time check (raises reconciler.policy.PolicyError). By default, a pool
    # of compile worker processes: off the event loop, bounded in CPU time and compiled size.
    check_code: CheckCode | None = None,
    # The replica running beside the API in `serve` (its ReplicaHealth), reported by /health.
    replica: LocalReplica | None = None,
    # (webhook_id, secret) -> (key_id, ciphertext); None: webhooks cannot be registered.
    seal_webhook_secret: SealSecret | None = None,
) -> Starlette:
    pool = CompilePool(CompileLimits.from_settings(settings)) if check_code is None else None
    check = pool.check if pool is not None else check_code
    assert check is not None
    api = ExecutorApi(settings, store, seal_credentials=seal_credentials, check_code=check, replica=replica)
    secret = settings.jwt_secret
    tenant = TenantApi(api, TenantAuth(secret.get_secret_value()) if secret is not None else None)
    dashboard = Dashboard(tenant, secret)
    webhooks = WebhookApi(store, seal_secret=seal_webhook_secret, tenant_user=tenant.user_of_request)
    endpoints = api.endpoints() + tenant.endpoints() + webhooks.endpoints() + webhooks.tenant_endpoints()
    document: dict[str, object] = {}

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    async def docs(request: Request) -> Response:
        return dashboard.render(request, "docs.html", **docs_view(document))

    endpoints.append(Endpoint("GET", "/openapi.json", openapi, "This OpenAPI document", {200: None}, public=True))
    document.update(build_openapi(endpoints, title="strategy-executor API", version=__version__))
    # The interval's bounds are settings, not constants of the model: state this server's.
    interval = document["components"]["schemas"]["DeployRequest"]["properties"]["execution_interval"]  # type: ignore[index]
    interval.update(minimum=settings.min_execution_interval, maximum=settings.max_execution_interval)

    token = settings.executor_api_token.get_secret_value() if settings.executor_api_token else None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if pool is not None:
            await pool.close()

    return Starlette(
        lifespan=lifespan,
        routes=[
            *routes(endpoints),
            Route("/metrics", metrics.endpoint),
            Route("/docs", docs, methods=["GET"]),
            *dashboard.routes(),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(SecurityHeadersMiddleware),
            Middleware(BearerAuthMiddleware, token=token, exempt=_own_auth),
        ],
    )


def _own_auth(path: str) -> bool:
    """Paths the executor token does not guard: the tenant API and the dashboard check a user's JWT
    themselves, and the API's description (no secret in it) is public so /docs renders in a browser."""
    return (
        path.startswith(("/api/bot/", "/api/webhooks")) or path in ("/openapi.json", "/docs") or is_dashboard_path(path)
    )


def routes(endpoints: list[Endpoint]) -> list[Route]:
    """One Route per path, so a 405 lists every method the path allows (not just the first route's)."""
    by_path: dict[str, dict[str, Handler]] = {}
    for endpoint in endpoints:
        by_path.setdefault(endpoint.path, {})[endpoint.method] = endpoint.handler
    return [Route(path, _by_method(handlers), methods=list(handlers)) for path, handlers in by_path.items()]


def _by_method(handlers: dict[str, Handler]) -> Handler:
    if len(handlers) == 1:
        return next(iter(handlers.values()))

    async def dispatch(request: Request) -> Response:
        return await handlers["GET" if request.method == "HEAD" else request.method](request)

    return dispatch
