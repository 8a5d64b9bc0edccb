"""A replica's own /health and /metrics, for `worker` processes that run without the API (probes, scrapes)."""

from __future__ import annotations

from dataclasses import asdict

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from reconciler import metrics
from reconciler.loop import ReplicaHealth


def health_app(health: ReplicaHealth) -> Starlette:
    async def endpoint(request: Request) -> JSONResponse:
        healthy = health.database_ok and health.running
        body = {"status": "healthy" if healthy else "unhealthy", **asdict(health)}
        return JSONResponse(body, status_code=200 if healthy else 503)

    return Starlette(routes=[Route("/health", endpoint), Route("/metrics", metrics.endpoint)])
