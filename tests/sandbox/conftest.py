"""Fixtures for tests through the real execution path: a real Sandbox, its real zygote, a real fork each.

pytest-asyncio is not used: one event loop runs for the whole session in a background thread, the
session's Sandbox lives on it, and tests hand it coroutines with `loop_runner.run(...)`.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from reconciler.outcome import BrokerError
from reconciler.sandbox import Sandbox, SandboxLimits

T = TypeVar("T")

# Another tenant's API secret. It is planted where a hostile strategy would look for it: this (the
# supervising) process's environment and memory, and the closure of a broker. No strategy may read it.
PLANTED_SECRET = "sk-live-OTHER-TENANT-7f3a9c1e5b2d4f60a8e1c3b5d7f9a2c4"
os.environ["OTHER_TENANT_API_SECRET"] = PLANTED_SECRET
os.environ.setdefault("DATABASE_URL", f"postgresql://executor:{PLANTED_SECRET}@127.0.0.1:5432/executor")
_SECRET_IN_MEMORY = [PLANTED_SECRET.encode(), PLANTED_SECRET]

TEST_LIMITS = SandboxLimits(
    memory_mb=100,
    cpu_seconds=1,
    wall_seconds=2.0,
    output_bytes=65536,
    result_bytes=65536,
    state_bytes=65536,
)


class LoopRunner:
    """A long-lived event loop in a daemon thread; `run` executes a coroutine on it and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="sandbox-test-loop", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()


@pytest.fixture(scope="session")
def loop_runner() -> Iterator[LoopRunner]:
    runner = LoopRunner()
    yield runner
    runner.close()


@pytest.fixture(scope="session")
def sandbox(loop_runner: LoopRunner) -> Iterator[Sandbox]:
    box = Sandbox(TEST_LIMITS)
    loop_runner.run(box.start())
    yield box
    loop_runner.run(box.close())


def make_secret_broker() -> Any:
    """A broker that, like the real one, holds a tenant's credentials in its closure."""
    credentials = {"api_key": "key-OTHER", "api_secret": PLANTED_SECRET}

    async def broker(method: str, params: dict[str, Any]) -> Any:
        if method == "get_balances":
            # A careless error path that mentions the secret: the supervisor must not forward it.
            raise RuntimeError(f"signing failed with secret {credentials['api_secret']}")
        if method == "get_user_info":
            raise BrokerError("rejected", "not allowed for this strategy")
        return {"method": method, "params": params}

    return broker


async def good_broker(method: str, params: dict[str, Any]) -> Any:
    if method == "get_ticker":
        return [{"market": "BTCUSDT", "last_price": "64000.5"}]
    raise BrokerError("unsupported", f"{method} is not supported in tests")


GOOD_STRATEGY = """
import time
df = pd.DataFrame({"close": np.arange(100.0)})
df["sma"] = df["close"].rolling(10).mean()
ticker = client.get_ticker()
STATE["runs"] = STATE.get("runs", 0) + 1
print("good strategy ran", CONFIG["tag"])
time.sleep(0.3)
RESULT = {"sma": float(df["sma"].iloc[-1]), "price": ticker[0]["last_price"]}
"""


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def zygote_children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        return [int(child) for child in fh.read().split()]


async def leftover_processes(box: Sandbox) -> list[int]:
    """Children of the zygote other than its pre-forked spares (which hold no data and wait for work)
    and its template (which forks them); the zygote's own table of running executions must be empty too."""
    assert box._zygote is not None
    status = await box.zygote_status()
    assert status["running"] == []
    return sorted(set(zygote_children(box._zygote.process.pid)) - set(status["warm"]) - {status.get("template")})


class Harness:
    """Runs a hostile strategy beside a well-behaved one and checks that the replica is unaffected."""

    def __init__(self, runner: LoopRunner, box: Sandbox) -> None:
        self.runner = runner
        self.box = box

    def run(
        self,
        code: str,
        *,
        config: dict[str, Any] | None = None,
        state: dict[str, Any] | None = None,
        broker: Any = None,
    ) -> Any:
        from reconciler.outcome import ExecutionRequest

        zygote = self.box._zygote
        assert zygote is not None and zygote.alive
        zygote_pid = zygote.process.pid
        rss_before = _rss_bytes()
        hostile = ExecutionRequest("hostile", "tenant-a", code, config or {}, state or {})
        good = ExecutionRequest("good", "tenant-b", GOOD_STRATEGY, {"tag": "b"}, {"runs": 41})

        async def both() -> tuple[Any, Any, float]:
            lag = 0.0
            done = asyncio.Event()

            async def monitor() -> None:
                nonlocal lag
                loop = asyncio.get_running_loop()
                while not done.is_set():
                    before = loop.time()
                    await asyncio.sleep(0.02)
                    lag = max(lag, loop.time() - before - 0.02)

            watcher = asyncio.create_task(monitor())
            try:
                return (
                    *await asyncio.gather(
                        self.box.run(hostile, broker or make_secret_broker()), self.box.run(good, good_broker)
                    ),
                    lag,
                )
            finally:
                done.set()
                await watcher

        outcome, good_outcome, lag = self.runner.run(both())

        # The well-behaved strategy next to it ran normally.
        assert good_outcome.status == "succeeded", good_outcome
        assert good_outcome.result == {"sma": 94.5, "price": "64000.5"}
        assert good_outcome.state == {"runs": 42}
        assert good_outcome.output == "good strategy ran b\n"
        # The replica: same zygote, alive, nothing left running, event loop responsive, memory bounded.
        assert self.box._zygote is zygote and zygote.alive and zygote.process.returncode is None
        os.kill(zygote_pid, 0)
        assert self.runner.run(leftover_processes(self.box)) == []
        assert lag < 0.5, f"the supervisor's event loop stalled for {lag:.3f} s"
        assert _rss_bytes() - rss_before < 64 << 20
        assert _SECRET_IN_MEMORY[1] == PLANTED_SECRET
        # Nothing the hostile run recorded contains the planted secret.
        recorded = repr((outcome.output, outcome.error, outcome.result, outcome.state))
        assert PLANTED_SECRET not in recorded
        return outcome


@pytest.fixture(scope="session")
def harness(loop_runner: LoopRunner, sandbox: Sandbox) -> Harness:
    return Harness(loop_runner, sandbox)


@pytest.fixture(scope="session")
def fake_database() -> Iterator[Any]:
    """A listening TCP socket on 127.0.0.1 standing in for PostgreSQL (5432 if free)."""
    import socket

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", 5432))
    except OSError:
        listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    yield listener
    listener.close()
