"""Print the service's OpenAPI document without a running server or a database.

`strategy-executor openapi [-o FILE]` (or `python -m api.openapi_dump`) builds the app exactly as
`serve` does and asks it for `GET /openapi.json`, so the dump is the document the service serves,
not a copy kept beside it. Settings come from their defaults, not the environment: the document is
the contract clients are generated from, and it must not change with whoever runs the dump (the
interval bounds in it are settings).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from api.app import create_app
from reconciler.settings import Settings
from reconciler.storage.api_store import Store
from reconciler.storage.db import create_engine

_TOKEN = "openapi-dump"
# Never used to sign anything: routes that need a JWT secret to exist are built with it.
_JWT_SECRET = "openapi-dump-only-not-a-secret-0123456789"


def openapi_document() -> dict[str, Any]:
    return asyncio.run(_fetch_document())


async def _fetch_document() -> dict[str, Any]:
    settings = Settings.model_construct(executor_api_token=SecretStr(_TOKEN), jwt_secret=SecretStr(_JWT_SECRET))
    # The engine is created but never connects: serving the document touches no database.
    engine = create_engine("postgresql://openapi-dump@localhost/none", pool_size=1)
    try:
        app = create_app(settings, Store(engine))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://openapi-dump") as client:
            response = await client.get("/openapi.json", headers={"Authorization": f"Bearer {_TOKEN}"})
            response.raise_for_status()
            document: dict[str, Any] = response.json()
            return document
    finally:
        await engine.dispose()


def write_document(output: Path | None) -> None:
    text = json.dumps(openapi_document(), indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api.openapi_dump", description=__doc__)
    parser.add_argument("-o", "--output", type=Path, help="write the document here instead of standard output")
    write_document(parser.parse_args(argv).output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
