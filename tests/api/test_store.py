"""The Store on its own: concurrent deploys, run requests racing a finalized deletion, wrapped errors."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg
import pytest

from reconciler.storage.api_store import SealedCredentials, Store, StrategyConflict, StrategySpec
from reconciler.storage.db import DatabaseUnavailable, create_engine

T = TypeVar("T")


def spec(strategy_id: str = "s1", *, user_id: str = "u1", code: str = "x = 1") -> StrategySpec:
    return StrategySpec(
        strategy_id=strategy_id,
        user_id=user_id,
        name=strategy_id,
        code=code,
        config={"a": 1},
        execution_interval=5,
        exchange="paper",
        desired_state="running",
    )


def with_store(database_url: str, use: Callable[[Store], Awaitable[T]]) -> T:
    async def main() -> T:
        engine = create_engine(database_url, pool_size=10)
        try:
            return await use(Store(engine))
        finally:
            await engine.dispose()

    return asyncio.run(main())


def test_concurrent_deploys_of_one_id_create_once_and_bump_per_deploy(
    database_url: str, pg_conn: psycopg.Connection
) -> None:
    async def use(store: Store) -> list[bool]:
        results = await asyncio.gather(*(store.deploy(spec(code=f"x = {i}"), None) for i in range(8)))
        return [r.created for r in results]

    created = with_store(database_url, use)
    assert created.count(True) == 1
    assert pg_conn.execute("SELECT generation FROM strategies").fetchone() == (8,)


def test_deploy_conflicts(database_url: str, pg_conn: psycopg.Connection) -> None:
    async def use(store: Store) -> None:
        await store.deploy(spec(), SealedCredentials("k", b"sealed"))
        with pytest.raises(StrategyConflict, match="another user"):
            await store.deploy(spec(user_id="u2"), None)
        assert await store.request_deletion("s1") is not None
        with pytest.raises(StrategyConflict, match="being deleted"):
            await store.deploy(spec(), None)

    with_store(database_url, use)
    # The refused deploys changed nothing, credentials included.
    assert pg_conn.execute("SELECT count(*) FROM strategy_credentials").fetchone() == (1,)


def test_a_redeploy_replaces_only_the_users_existing_strategy(database_url: str, pg_conn: psycopg.Connection) -> None:
    """A redeploy never creates: not for another user's id, not for one whose deletion has finished
    (a plain deploy of that id would create it again, as the executor API's PUT may)."""

    async def use(store: Store) -> None:
        await store.deploy(spec(), None)
        replaced = await store.redeploy(spec(code="x = 2"), None)
        assert replaced is not None and not replaced.created
        assert (replaced.strategy["code"], replaced.strategy["generation"]) == ("x = 2", 2)
        assert await store.redeploy(spec(user_id="u2"), None) is None
        assert await store.request_deletion("s1") is not None
        with pytest.raises(StrategyConflict, match="being deleted"):
            await store.redeploy(spec(), None)
        pg_conn.execute("DELETE FROM strategies")  # a replica finalized the deletion
        assert await store.redeploy(spec(), SealedCredentials("k", b"sealed")) is None
        assert pg_conn.execute("SELECT count(*) FROM strategies").fetchone() == (0,)
        assert (await store.deploy(spec(), None)).created

    with_store(database_url, use)
    assert pg_conn.execute("SELECT count(*) FROM strategy_credentials").fetchone() == (0,)


def test_run_request_for_a_finalized_strategy_is_none(database_url: str, pg_conn: psycopg.Connection) -> None:
    async def use(store: Store) -> object:
        await store.deploy(spec(), None)
        pg_conn.execute("DELETE FROM strategies")
        return await store.request_run("s1")

    assert with_store(database_url, use) is None


def test_sealed_credentials_do_not_show_their_bytes() -> None:
    assert "secret" not in repr(SealedCredentials("k", b"secret"))


def test_driver_errors_come_out_as_database_unavailable() -> None:
    async def use(store: Store) -> object:
        return await store.get_spec("s1")

    with pytest.raises(DatabaseUnavailable):
        with_store("postgresql+psycopg://nobody@127.0.0.1:1/nothing", use)
