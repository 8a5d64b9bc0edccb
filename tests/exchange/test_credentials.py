"""Sealed credentials in PostgreSQL: ciphertext only at rest, load, start-up check, rotation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from reconciler.crypto import CredentialCipher, Credentials, DecryptionError, generate_key
from reconciler.storage.credentials import check_key_ids, load_credentials, rotate
from reconciler.tables import strategy_credentials
from tests.exchange.helpers import add_strategy

OLD, NEW = generate_key("old"), generate_key("new")
SECRET = "very-secret-api-secret-value"


def run(database_url: str, body: Callable[[AsyncEngine], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        engine = create_async_engine(database_url)
        try:
            return await body(engine)
        finally:
            await engine.dispose()

    return asyncio.run(main())


async def seal_rows(engine: AsyncEngine, cipher: CredentialCipher, count: int) -> None:
    for n in range(count):
        strategy_id = f"s{n:03d}"
        await add_strategy(engine, strategy_id, exchange="coindcx")
        sealed = cipher.encrypt(Credentials(f"key-{n}", f"{SECRET}-{n}"), strategy_id=strategy_id)
        async with engine.begin() as conn:
            await conn.execute(
                insert(strategy_credentials).values(
                    strategy_id=strategy_id, key_id=sealed.key_id, credentials=sealed.ciphertext
                )
            )


async def stored(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        query = select(strategy_credentials).order_by(strategy_credentials.c.strategy_id)
        return list((await conn.execute(query)).mappings().all())


def test_only_ciphertext_at_rest_and_load_opens_it(database_url: str) -> None:
    cipher = CredentialCipher.from_key_string(OLD)

    async def body(engine: AsyncEngine) -> Any:
        await seal_rows(engine, cipher, 1)
        await add_strategy(engine, "none")
        return (
            await stored(engine),
            await load_credentials(engine, cipher, "s000"),
            await load_credentials(engine, cipher, "none"),
        )

    rows, loaded, missing = run(database_url, body)
    assert rows[0]["key_id"] == "old"
    assert SECRET.encode() not in rows[0]["credentials"] and b"key-0" not in rows[0]["credentials"]
    assert loaded == Credentials("key-0", f"{SECRET}-0")
    assert missing is None


def test_rotation_reseals_every_row_under_the_new_key(database_url: str) -> None:
    async def body(engine: AsyncEngine) -> Any:
        await seal_rows(engine, CredentialCipher.from_key_string(OLD), 5)
        rotating = CredentialCipher.from_key_string(f"{NEW},{OLD}")
        counts_before = await check_key_ids(engine, rotating)
        done = await rotate(engine, rotating, batch_size=2)  # several batches, the last one short
        again = await rotate(engine, rotating, batch_size=2)
        new_only = CredentialCipher.from_key_string(NEW)
        counts_after = await check_key_ids(engine, new_only)
        loaded = [await load_credentials(engine, new_only, f"s{n:03d}") for n in range(5)]
        return counts_before, done, again, counts_after, loaded

    counts_before, done, again, counts_after, loaded = run(database_url, body)
    assert counts_before == {"old": 5}
    assert done == 5 and again == 5
    assert counts_after == {"new": 5}
    assert loaded == [Credentials(f"key-{n}", f"{SECRET}-{n}") for n in range(5)]


def test_startup_check_names_a_key_that_is_not_configured(database_url: str) -> None:
    async def body(engine: AsyncEngine) -> Any:
        await seal_rows(engine, CredentialCipher.from_key_string(OLD), 1)
        await check_key_ids(engine, CredentialCipher.from_key_string(NEW))

    with pytest.raises(DecryptionError, match="key id\\(s\\) 'old' that ENCRYPTION_KEY does not list"):
        run(database_url, body)


def test_startup_check_opens_a_row_per_key_id(database_url: str) -> None:
    async def body(engine: AsyncEngine) -> Any:
        await seal_rows(engine, CredentialCipher.from_key_string(OLD), 2)
        await check_key_ids(engine, CredentialCipher.from_key_string(generate_key("old")))

    with pytest.raises(DecryptionError, match="do not open with key 'old'"):
        run(database_url, body)


def test_wrong_key_material_stops_rotation_without_changing_rows(database_url: str) -> None:
    impostor = generate_key("old")  # same id, other key material

    async def body(engine: AsyncEngine) -> Any:
        await seal_rows(engine, CredentialCipher.from_key_string(OLD), 2)
        before = await stored(engine)
        with pytest.raises(DecryptionError, match="do not open") as info:
            await rotate(engine, CredentialCipher.from_key_string(f"{NEW},{impostor}"))
        return before, await stored(engine), str(info.value)

    before, after, message = run(database_url, body)
    assert [(r["key_id"], r["credentials"]) for r in before] == [(r["key_id"], r["credentials"]) for r in after]
    assert SECRET not in message
