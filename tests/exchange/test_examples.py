"""The example strategies, driven through the broker on the paper exchange over several executions.

The code runs with plain `exec` here, not in the sandbox (the lead's end-to-end tests do that); it does
compile under RestrictedPython, and its client is a synchronous shim that forwards each call to the
broker session exactly as the sandbox's proxy does: (method, {parameter: value}) by CLIENT_METHODS.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from RestrictedPython import compile_restricted_exec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from reconciler.crypto import CredentialCipher, generate_key
from reconciler.exchange.broker import BrokerFactory
from reconciler.exchange.feed import SimulatedFeed
from reconciler.exchange.ratelimit import RateLimiter
from reconciler.outcome import CLIENT_METHODS, BrokerCall
from reconciler.settings import Settings
from reconciler.storage.exchange_store import ExchangeStore
from reconciler.tables import orders
from tests.exchange.helpers import add_execution, add_strategy

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
T0 = 1_790_000_000.0


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


class ShimClient:
    """Synchronous, like the sandbox proxy: positional and keyword arguments mapped by CLIENT_METHODS."""

    def __init__(self, call: BrokerCall, loop: asyncio.AbstractEventLoop) -> None:
        self._call = call
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        parameters = CLIENT_METHODS[name]

        def method(*args: Any, **kwargs: Any) -> Any:
            params = dict(zip(parameters, args, strict=False)) | kwargs
            future = asyncio.run_coroutine_threadsafe(self._call(name, params), self._loop)
            return future.result()

        return method


def run_code(code: str, call: BrokerCall, loop: asyncio.AbstractEventLoop, config: dict, state: dict) -> Any:
    lines: list[str] = []
    namespace: dict[str, Any] = {
        "CONFIG": config,
        "STATE": state,
        "pd": pd,
        "np": np,
        "client": ShimClient(call, loop),
        "log": lambda *args: lines.append(" ".join(map(str, args))),
        "RESULT": None,
    }
    exec(compile(code, "<strategy>", "exec"), namespace)
    return namespace["RESULT"], lines


def drive(database_url: str, name: str, runs: int, step_seconds: float, config: dict[str, Any]) -> Any:
    code = (EXAMPLES / f"{name}.py").read_text()
    clock = Clock()

    async def main() -> Any:
        engine: AsyncEngine = create_async_engine(database_url)
        try:
            await add_strategy(engine)
            factory = BrokerFactory(
                Settings(),
                ExchangeStore(engine),
                CredentialCipher.from_key_string(generate_key()),
                feed=SimulatedFeed(clock=clock),
                # Simulated time runs faster than the wall clock: do not let the per-key bucket pace it.
                limiter=RateLimiter(rate_per_second=10_000, burst=10_000),
            )
            state: dict[str, Any] = {}
            results = []
            loop = asyncio.get_running_loop()
            for _ in range(runs):
                execution_id = await add_execution(engine, "strat-1")
                async with factory.session(
                    strategy_id="strat-1", execution_id=execution_id, exchange="paper", config=config
                ) as call:
                    result, _ = await asyncio.to_thread(run_code, code, call, loop, config, state)
                state = json.loads(json.dumps(state))  # persisted between runs as JSON, like STATE
                results.append(json.loads(json.dumps(result)))
                clock.t += step_seconds
            async with factory.session(
                strategy_id="strat-1", execution_id=execution_id, exchange="paper", config={}
            ) as call:
                balances = await call("get_balances", {})
            async with engine.connect() as conn:
                rows = (await conn.execute(select(orders).order_by(orders.c.created_at))).mappings().all()
            await factory.aclose()
            return results, state, balances, rows
        finally:
            await engine.dispose()

    return asyncio.run(main())


@pytest.mark.parametrize("name", ["ma_crossover", "rsi_mean_reversion", "grid"])
def test_examples_compile_under_restrictedpython(name: str) -> None:
    result = compile_restricted_exec((EXAMPLES / f"{name}.py").read_text(), "<strategy>")
    assert result.errors == ()


def test_ma_crossover_trades_on_crossovers(database_url: str) -> None:
    results, state, balances, rows = drive(database_url, "ma_crossover", runs=90, step_seconds=60, config={})
    actions = [r["action"] for r in results]
    assert state["runs"] == 90
    assert any(a.startswith("bought") for a in actions) and any(a.startswith("sold") for a in actions)
    assert len(rows) == state["trades"] and all(r["status"] == "filled" for r in rows)
    # Every trade flipped the position: buys and sells alternate, starting with a buy.
    assert [r["side"] for r in rows] == ["buy", "sell"] * (len(rows) // 2) + ["buy"] * (len(rows) % 2)
    assert {b["currency"] for b in balances} >= {"USDT", "BTC"}


def test_rsi_mean_reversion_buys_low_and_sells_high(database_url: str) -> None:
    config = {"oversold": 35, "overbought": 65}
    results, state, _, rows = drive(database_url, "rsi_mean_reversion", runs=200, step_seconds=300, config=config)
    buys = [r for r in results if r["action"] == "buy"]
    sells = [r for r in results if r["action"] == "sell"]
    assert buys and sells
    assert all(r["rsi"] < 35 for r in buys) and all(r["rsi"] > 65 for r in sells)
    # RESULT's holding is the position the run leaves: bought after a buy, nothing after a sell.
    assert all(r["holding"] > 0 for r in buys) and all(r["holding"] == 0 for r in sells)
    # Runs alternate buy, sell, buy, ...: one position at a time, every order on record and filled.
    traded = [r["action"] for r in results if r["action"] != "wait"]
    assert traded == ["buy", "sell"] * (len(traded) // 2) + ["buy"] * (len(traded) % 2)
    assert [r["side"] for r in rows] == traded and all(r["status"] == "filled" for r in rows)
    assert "realized_pct" in state


def test_grid_places_a_ladder_and_answers_fills(database_url: str) -> None:
    results, state, balances, rows = drive(database_url, "grid", runs=48, step_seconds=1800, config={})
    assert len(results[0]["placed"]) == 5 and all(p.startswith("buy@") for p in results[0]["placed"])
    assert results[0]["open_orders"] == 5
    sells = [r for r in rows if r["side"] == "sell"]
    assert sells, "some buy filled and was answered by a sell"
    assert state["round_trips"] >= 1
    assert all(r["status"] in ("open", "filled") for r in rows)
    # Whatever still rests holds funds: open orders lock quote (buys) or coin (sells).
    wallet = {b["currency"]: b for b in balances}
    assert results[-1]["open_orders"] > 0
    assert wallet["USDT"]["locked_balance"] + wallet.get("BTC", {"locked_balance": 0})["locked_balance"] > 0
