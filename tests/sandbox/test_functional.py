"""What a normal strategy can do, through the real Sandbox, zygote and fork."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import time
from typing import Any

import pytest

from reconciler.outcome import BrokerError, ExecutionOutcome, ExecutionRequest
from reconciler.sandbox import Sandbox
from tests.sandbox.conftest import TEST_LIMITS, LoopRunner, good_broker, leftover_processes


def run(
    loop_runner: LoopRunner,
    sandbox: Sandbox,
    code: str,
    *,
    config: dict[str, Any] | None = None,
    state: dict[str, Any] | None = None,
    broker: Any = None,
) -> ExecutionOutcome:
    request = ExecutionRequest("exec-1", "strategy-1", code, config or {}, state or {})
    return loop_runner.run(sandbox.run(request, broker))


def test_typical_pandas_strategy(loop_runner: LoopRunner, sandbox: Sandbox) -> None:
    code = """
import math
closes = CONFIG["closes"]
df = pd.DataFrame({"close": closes})
df["sma"] = df["close"].rolling(3).mean()
df["ret"] = np.log(df["close"]).diff()
signal = "buy" if df["close"].iloc[-1] > df["sma"].iloc[-1] else "hold"
STATE["signals"] = STATE.get("signals", []) + [signal]
print("signal", signal)
log.warning("volatility", round(float(df["ret"].std()), 6))
RESULT = {"signal": signal, "sma": df["sma"].iloc[-1], "frame": df.tail(2)[["close"]], "pi": math.pi}
"""
    outcome = run(loop_runner, sandbox, code, config={"closes": [1.0, 2.0, 3.0, 5.0]}, state={"signals": ["hold"]})
    assert outcome.status == "succeeded", outcome.error
    assert outcome.error is None
    assert outcome.state == {"signals": ["hold", "buy"]}
    assert outcome.output.startswith("signal buy\n[warning] volatility ")
    assert outcome.result["signal"] == "buy"
    assert outcome.result["sma"] == pytest.approx(10 / 3)
    assert outcome.result["frame"] == {"close": {"2": 3.0, "3": 5.0}}
    assert 0 < outcome.duration < TEST_LIMITS.wall_seconds


def test_allowed_modules_and_classes_work(loop_runner: LoopRunner, sandbox: Sandbox) -> None:
    code = """
import collections, datetime, decimal, functools, itertools, json, random, re, statistics, string, time
from typing import List
from collections.abc import Mapping

class Position:
    def __init__(self, size):
        self.size = size

p = Position(3)
p.size = p.size + 1
counts = collections.Counter("abca")
RESULT = {
    "size": p.size,
    "mean": statistics.mean([1, 2, 3]),
    "json": json.loads(json.dumps({"a": 1})),
    "re": re.findall(r"[0-9]+", "a1b22"),
    "dec": str(decimal.Decimal("0.1") + decimal.Decimal("0.2")),
    "prod": list(itertools.product([1, 2], repeat=2))[:2],
    "reduce": functools.reduce(lambda a, b: a + b, [1, 2, 3]),
    "date": datetime.date(2024, 1, 2).isoformat(),
    "common": counts.most_common(1),
    "random": 0 <= random.random() < 1,
    "letters": string.ascii_lowercase[:3],
    "mapping": isinstance({}, Mapping),
    "now": time.time() > 0,
    "csv": pd.DataFrame({"a": [1]}).to_csv(index=False),
    "agg": pd.DataFrame({"a": [1.0, 3.0]}).agg("mean")["a"],
    "f": f"{p.size:03d}",
}
"""
    outcome = run(loop_runner, sandbox, code)
    assert outcome.status == "succeeded", outcome.error
    assert outcome.result == {
        "size": 4,
        "mean": 2,
        "json": {"a": 1},
        "re": ["1", "22"],
        "dec": "0.3",
        "prod": [[1, 1], [1, 2]],
        "reduce": 6,
        "date": "2024-01-02",
        "common": [["a", 2]],
        "random": True,
        "letters": "abc",
        "mapping": True,
        "now": True,
        "csv": "a\n1\n",
        "agg": 2.0,
        "f": "004",
    }


def test_traceback_uses_the_strategys_own_line_numbers(loop_runner: LoopRunner, sandbox: Sandbox) -> None:
    code = "x = 1\n\ndef inner(value):\n    return value['missing']\n\ndef outer():\n    return inner({})\n\nouter()\n"
    outcome = run(loop_runner, sandbox, code)
    assert outcome.status == "failed"
    assert outcome.error is not None
    assert 'File "<strategy>", line 9, in <module>' in outcome.error
    assert 'File "<strategy>", line 7, in outer' in outcome.error
    assert 'File "<strategy>", line 4, in inner' in outcome.error
    assert "return value['missing']" in outcome.error
    assert outcome.error.rstrip().endswith("KeyError: 'missing'")
    assert "/reconciler/" not in outcome.error and "site-packages" not in outcome.error


def test_policy_error_is_reported_with_line_and_column_without_forking(
    loop_runner: LoopRunner, sandbox: Sandbox
) -> None:
    outcome = run(loop_runner, sandbox, "x = 1\ny = x._secret\n")
    assert outcome.status == "failed"
    assert outcome.duration == 0.0
    assert outcome.error is not None and outcome.error.startswith("Policy violation: line 2, column 4:")


def test_output_and_log_keep_their_order(loop_runner: LoopRunner, sandbox: Sandbox) -> None:
    code = "print('a')\nlog('b')\nlog.error('c', 1)\nprint('d', end='')\n"
    outcome = run(loop_runner, sandbox, code)
    assert outcome.output == "a\n[info] b\n[error] c 1\nd"
    assert not outcome.output_truncated


def test_client_calls_cross_to_the_broker(loop_runner: LoopRunner, sandbox: Sandbox) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    async def broker(method: str, params: dict[str, Any]) -> Any:
        calls.append((method, params))
        if method == "cancel_order":
            raise BrokerError("not_found", "no such order")
        return {"id": "o-1", "status": "open"}

    code = """
own = CoinDCXClient("ignored-key", "ignored-secret")
order = own.create_order("buy", "limit_order", "BTCUSDT", np.float64(0.5), price_per_unit=64000)
try:
    client.cancel_order(id="o-1")
except ExchangeError as exc:
    print(exc.kind, exc.message)
try:
    client.get_ticker(bogus=1)
except TypeError as exc:
    print("TypeError", exc)
try:
    client.cancel_order(client_order_id="x\\x00y")
except ExchangeError as exc:
    print(exc.kind)
RESULT = order
"""
    outcome = run(loop_runner, sandbox, code, broker=broker)
    assert outcome.status == "succeeded", outcome.error
    assert outcome.result == {"id": "o-1", "status": "open"}
    assert calls == [
        (
            "create_order",
            {
                "side": "buy",
                "order_type": "limit_order",
                "market": "BTCUSDT",
                "total_quantity": 0.5,
                "price_per_unit": 64000,
            },
        ),
        ("cancel_order", {"id": "o-1"}),
    ]
    assert outcome.output == (
        "not_found no such order\nTypeError get_ticker() got an unexpected keyword argument 'bogus'\ninvalid_request\n"
    )


def test_without_a_broker_client_calls_raise_exchange_error(loop_runner: LoopRunner, sandbox: Sandbox) -> None:
    outcome = run(loop_runner, sandbox, "client.get_balances()\n")
    assert outcome.status == "failed"
    assert "ExchangeError: get_balances: no exchange client is configured for this run" in (outcome.error or "")


def test_request_state_that_is_not_json_fails_before_forking(loop_runner: LoopRunner, sandbox: Sandbox) -> None:
    outcome = run(loop_runner, sandbox, "RESULT = 1\n", state={"bad": {1, 2}})
    assert outcome.status == "failed" and outcome.duration == 0.0
    assert "not JSON" in (outcome.error or "")


def test_ignoring_sigxcpu_ends_in_a_hard_cpu_kill(loop_runner: LoopRunner, sandbox: Sandbox) -> None:
    code = "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass\n"
    outcome = run(loop_runner, sandbox, code)
    assert outcome.status == "timed_out"
    # The CPU hard limit (2 s of CPU) or, on a loaded host, the wall clock (2.5 s) kills it first.
    assert "the process was killed" in (outcome.error or ""), outcome.error


def test_many_concurrent_runs_keep_their_own_data(loop_runner: LoopRunner, sandbox: Sandbox) -> None:
    code = "STATE['n'] = CONFIG['n'] * 2\nRESULT = CONFIG['n']\nprint(CONFIG['n'])\n"

    async def many() -> list[ExecutionOutcome]:
        return await asyncio.gather(
            *(sandbox.run(ExecutionRequest(f"e{n}", f"s{n}", code, {"n": n}, {})) for n in range(25))
        )

    outcomes = loop_runner.run(many())
    for n, outcome in enumerate(outcomes):
        assert outcome.status == "succeeded", outcome.error
        assert (outcome.result, outcome.state, outcome.output) == (n, {"n": 2 * n}, f"{n}\n")


def test_start_is_idempotent(loop_runner: LoopRunner, sandbox: Sandbox) -> None:
    zygote = sandbox._zygote
    loop_runner.run(sandbox.start())
    assert sandbox._zygote is zygote


def test_interrupt_all_ends_running_executions(loop_runner: LoopRunner) -> None:
    # Long runs, interrupted once all three are running (however long a busy host takes to start them).
    box = Sandbox(dataclasses.replace(TEST_LIMITS, wall_seconds=60.0, cpu_seconds=30))

    async def scenario() -> tuple[list[ExecutionOutcome], ExecutionOutcome, float]:
        await box.start()
        runs = [
            asyncio.create_task(box.run(ExecutionRequest(f"e{i}", "s", "import time\ntime.sleep(40)\n")))
            for i in range(3)
        ]
        while len((await box.zygote_status())["running"]) < 3:
            await asyncio.sleep(0.02)
        interrupting = time.monotonic()
        await box.interrupt_all()
        interrupted = await asyncio.gather(*runs)
        took = time.monotonic() - interrupting
        after = await box.run(ExecutionRequest("after", "s", "RESULT = 'fine'\n"))
        await box.close()
        return interrupted, after, took

    interrupted, after, took = loop_runner.run(scenario(), timeout=120)
    assert [outcome.status for outcome in interrupted] == ["interrupted"] * 3
    assert took < 30 and all(outcome.duration < 40 for outcome in interrupted)  # ended, not slept out
    assert after.status == "succeeded" and after.result == "fine"


def test_interrupt_all_ends_a_run_whose_process_had_not_started_yet(loop_runner: LoopRunner) -> None:
    """A run still compiling (or waiting for the zygote) when the replica interrupts everything never
    starts its process: it ends interrupted at once, not after running in full behind the drain."""
    box = Sandbox(dataclasses.replace(TEST_LIMITS, wall_seconds=60.0, cpu_seconds=30))

    async def scenario() -> tuple[ExecutionOutcome, float, list[Any]]:
        await box.start()
        compiling, go_on = asyncio.Event(), asyncio.Event()
        compile_code = box.compiler.compile

        async def held_compile(code: str) -> bytes:
            compiling.set()
            await go_on.wait()
            return await compile_code(code)

        box.compiler.compile = held_compile  # type: ignore[method-assign]
        run = asyncio.create_task(box.run(ExecutionRequest("e1", "s", "import time\ntime.sleep(20)\n")))
        await compiling.wait()
        interrupting = time.monotonic()
        await box.interrupt_all()
        go_on.set()
        outcome = await run
        took = time.monotonic() - interrupting
        running = (await box.zygote_status())["running"]
        await box.close()
        return outcome, took, running

    outcome, took, running = loop_runner.run(scenario(), timeout=120)
    assert outcome.status == "interrupted", outcome
    assert took < 10 and running == []


def test_zygote_death_fails_the_run_and_restarts_transparently(loop_runner: LoopRunner) -> None:
    box = Sandbox(dataclasses.replace(TEST_LIMITS, wall_seconds=60.0, cpu_seconds=30))

    async def scenario() -> tuple[ExecutionOutcome, ExecutionOutcome, int, int]:
        await box.start()
        first_pid = box._zygote.process.pid  # type: ignore[union-attr]
        running = asyncio.create_task(box.run(ExecutionRequest("e1", "s", "import time\ntime.sleep(40)\n")))
        while not (await box.zygote_status())["running"]:  # killed mid-run, however slow the host
            await asyncio.sleep(0.02)
        os.kill(first_pid, signal.SIGKILL)
        died = await running
        after = await box.run(ExecutionRequest("e2", "s", "RESULT = 'fine'\n"), good_broker)
        second_pid = box._zygote.process.pid  # type: ignore[union-attr]
        await box.close()
        return died, after, first_pid, second_pid

    died, after, first_pid, second_pid = loop_runner.run(scenario())
    assert died.status == "failed"
    assert "sandbox process stopped during this run" in (died.error or "")
    assert after.status == "succeeded" and after.result == "fine", after
    assert second_pid != first_pid


# Operations strategies commonly use; several import lazily (pandas internals, `_strptime`, codecs),
# which must keep working in a child that runs as a user who may not read the interpreter's library.
COMMON_OPERATIONS = {
    "strptime": "import datetime\nRESULT = str(datetime.datetime.strptime('2024-01-02', '%Y-%m-%d'))",
    "latin1": "RESULT = list('é'.encode('latin-1'))",
    "cp1252": "RESULT = list('é'.encode('cp1252'))",
    "utf16": "RESULT = len('é'.encode('utf-16'))",
    "to_datetime": "RESULT = str(pd.to_datetime('2024-01-01 10:00'))",
    "tz": "RESULT = str(pd.Timestamp('2024-01-01 10:00', tz='Asia/Kolkata'))",
    "tz_convert": "RESULT = str(pd.Timestamp('2024-01-01 10:00', tz='UTC').tz_convert('US/Eastern'))",
    "datetime tz": "import datetime\nRESULT = str(datetime.datetime.now(datetime.timezone.utc).year > 2000)",
    "resample": "df = pd.DataFrame({'p': range(10)}, index=pd.date_range('2024', periods=10, freq='min'))\n"
    "RESULT = df.resample('5min').ohlc().shape",
    "groupby": "df = pd.DataFrame({'k': ['a','b','a'], 'v': [1,2,3]})\nRESULT = df.groupby('k')['v'].sum().to_dict()",
    "pct_change": "s = pd.Series([1.0, 2.0, 4.0])\nRESULT = s.pct_change().tolist()",
    "ewm": "RESULT = pd.Series([1.0, 2.0, 3.0]).ewm(span=2).mean().round(3).tolist()",
    "describe": "RESULT = pd.Series([1.0, 2.0]).describe().to_dict()",
    "repr dt": "df = pd.DataFrame({'p': [1.5]}, index=pd.date_range('2024', periods=1))\nRESULT = repr(df)",
    "merge": "a = pd.DataFrame({'k': [1], 'x': [1]})\nb = pd.DataFrame({'k': [1], 'y': [2]})\n"
    "RESULT = a.merge(b, on='k').to_dict('records')",
    "pivot": "df = pd.DataFrame({'a': ['x','y'], 'b': ['p','q'], 'v': [1,2]})\n"
    "RESULT = df.pivot_table(index='a', columns='b', values='v', aggfunc='sum').fillna(0).to_dict()",
    "rolling apply": "RESULT = pd.Series([1.0,2,3,4]).rolling(2).apply(lambda w: w.max() - w.min()).tolist()",
    "np linalg": "RESULT = float(np.linalg.det(np.eye(3)))",
    "np polyfit": "RESULT = np.polyfit([0,1,2], [1,3,5], 1).round(3).tolist()",
    "np random": "RESULT = float(np.random.default_rng(1).normal())",
    "statistics": "import statistics\nRESULT = statistics.stdev([1, 2, 3, 4])",
    "decimal": "import decimal\nRESULT = str(decimal.Decimal('1.10').quantize(decimal.Decimal('0.1')))",
    "json numpy": "import json\nRESULT = json.dumps({'a': 1.5})",
    "re": "import re\nRESULT = re.sub(r'(\\w+)', r'<\\1>', 'ab cd')",
    "to_json": "RESULT = pd.DataFrame({'a': [1]}, index=pd.date_range('2024', periods=1)).to_json()",
    "qcut": "RESULT = pd.qcut(pd.Series(range(10)), 2, labels=False).tolist()",
    "str accessor": "RESULT = pd.Series(['BTCUSDT', 'ETHUSDT']).str.replace('USDT', '').tolist()",
    "interpolate": "RESULT = pd.Series([1.0, None, 3.0]).interpolate().tolist()",
    "corr": "RESULT = round(pd.DataFrame({'a': [1.0,2,3], 'b': [2.0,4,7]}).corr().iloc[0,1], 4)",
    "clip/where": "s = pd.Series([1, -1, 2])\nRESULT = s.where(s > 0, 0).clip(upper=1).tolist()",
    "time": "import time\nRESULT = time.strftime('%Y', time.gmtime(0))",
    "random": "import random\nrandom.seed(1)\nRESULT = random.randint(1, 10)",
    "calendar": "import calendar\nRESULT = calendar.monthrange(2024, 2)",
    "fractions": "import fractions\nRESULT = str(fractions.Fraction('1/3') * 3)",
    "format spec": "RESULT = format(3.14159, '.2f') + f'{2.5:>6.1f}'",
    "sort": "RESULT = pd.DataFrame({'a': [3, 1, 2]}).sort_values('a').a.tolist()",
    "cut": "RESULT = pd.cut([1, 5, 9], bins=[0, 3, 6, 10], labels=['l','m','h']).tolist()",
    "Timedelta": "RESULT = str(pd.Timedelta('1h') + pd.Timestamp('2024-01-01'))",
    "np datetime": "RESULT = str(np.datetime64('2024-01-01') + np.timedelta64(1, 'D'))",
    "astype str": "RESULT = pd.Series([1, 2]).astype(str).tolist()",
    "categorical": "RESULT = pd.Series(['a','b','a'], dtype='category').cat.codes.tolist()",
}


def test_common_operations_work_in_the_confined_child(loop_runner: LoopRunner, sandbox: Sandbox) -> None:
    async def all_of_them() -> list[ExecutionOutcome]:
        return await asyncio.gather(
            *(sandbox.run(ExecutionRequest(name, "s", code)) for name, code in COMMON_OPERATIONS.items())
        )

    outcomes = dict(zip(COMMON_OPERATIONS, loop_runner.run(all_of_them()), strict=True))
    failed = {name: outcome.error for name, outcome in outcomes.items() if outcome.status != "succeeded"}
    assert failed == {}
    assert outcomes["strptime"].result == "2024-01-02 00:00:00"
    assert outcomes["cp1252"].result == [233]
    assert outcomes["tz"].result == "2024-01-01 10:00:00+05:30"
    assert outcomes["groupby"].result == {"a": 4, "b": 2}


def test_output_printed_before_a_hard_kill_is_kept(loop_runner: LoopRunner, sandbox: Sandbox) -> None:
    code = (
        "print('before the hang')\nimport time\nwhile True:\n    try:\n        time.sleep(30)\n"
        "    except BaseException:\n        pass\n"
    )
    outcome = run(loop_runner, sandbox, code)
    assert outcome.status == "timed_out"
    assert "killed" in (outcome.error or "")
    assert outcome.output == "before the hang\n"


def test_a_broker_that_hangs_ends_in_a_timeout(loop_runner: LoopRunner, sandbox: Sandbox) -> None:
    async def slow_broker(method: str, params: dict[str, Any]) -> Any:
        await asyncio.sleep(30)

    outcome = run(loop_runner, sandbox, "print('asking')\nclient.get_ticker()\n", broker=slow_broker)
    assert outcome.status == "timed_out", outcome
    assert 'File "<strategy>", line 2' in (outcome.error or "")
    assert outcome.output == "asking\n"
    assert outcome.duration < TEST_LIMITS.wall_seconds + 1


def test_a_cancelled_run_kills_its_child(loop_runner: LoopRunner, sandbox: Sandbox) -> None:
    async def scenario() -> list[int]:
        task = asyncio.create_task(sandbox.run(ExecutionRequest("e", "s", "import time\ntime.sleep(1.5)\n")))
        await asyncio.sleep(0.3)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.2)
        return await leftover_processes(sandbox)

    assert loop_runner.run(scenario()) == []


def test_a_broker_raising_cancelled_error_does_not_escape_run(loop_runner: LoopRunner, sandbox: Sandbox) -> None:
    async def odd_broker(method: str, params: dict[str, Any]) -> Any:
        raise asyncio.CancelledError

    code = "try:\n    client.get_ticker()\nexcept ExchangeError as exc:\n    RESULT = exc.kind\n"
    outcome = run(loop_runner, sandbox, code, broker=odd_broker)
    assert outcome.status == "succeeded" and outcome.result == "internal"


def test_what_libraries_print_joins_the_output(loop_runner: LoopRunner, sandbox: Sandbox) -> None:
    code = "pd.DataFrame({'close': [1.0]}).info()\nprint('after')\n"
    outcome = run(loop_runner, sandbox, code)
    assert outcome.status == "succeeded", outcome.error
    assert "DataFrame" in outcome.output and "Data columns" in outcome.output
    assert "close" in outcome.output and outcome.output.endswith("after\n")


def test_the_pre_forked_spare_is_already_confined_and_replaceable(loop_runner: LoopRunner, sandbox: Sandbox) -> None:
    async def scenario() -> tuple[list[int], list[int], str, ExecutionOutcome]:
        before = (await sandbox.zygote_status())["warm"]
        for pid in before:  # a spare that dies while waiting (killed from outside) is replaced
            os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            after = (await sandbox.zygote_status())["warm"]
            if after and after != before:
                break
            await asyncio.sleep(0.02)
        for _ in range(250):  # the new spare confines itself right after its fork
            with open(f"/proc/{after[0]}/status") as fh:
                status_text = fh.read()
            if "Seccomp:\t2" in status_text:
                break
            await asyncio.sleep(0.02)
        outcome = await sandbox.run(ExecutionRequest("e", "s", "RESULT = 'ran'\n"))  # runs in the new spare
        return before, after, status_text, outcome

    before, after, status_text, outcome = loop_runner.run(scenario())
    assert len(before) == 1 and len(after) == 1 and after != before
    assert outcome.status == "succeeded" and outcome.result == "ran", outcome
    status = dict(line.split(":\t", 1) for line in status_text.splitlines() if ":\t" in line)
    assert status["Seccomp"].strip() == "2" and status["NoNewPrivs"].strip() == "1"
    if os.geteuid() == 0:  # one of the replica's own uids, never root
        uid = int(status["Uid"].split()[0])
        assert TEST_LIMITS.sandbox_uid_base <= uid < TEST_LIMITS.sandbox_uid_base + 128 * 512
