"""The end of a run: what the strategy left (RESULT, STATE, its exception) is stored under its limits.

Turning a strategy's objects into JSON, or formatting its exception, may call methods it wrote (a dict
subclass's `items`, an exception's `__str__`, a finaliser). These tests prove that such code runs
only while the run's limits hold, is counted as the strategy's, and never runs once the report is
built: through the language policy (`harness`), and with plain, unrestricted Python in the same
real confinement (`plain`), since the policy is not the boundary.
"""

from __future__ import annotations

import asyncio
import marshal
from collections.abc import Iterator
from typing import Any

import pytest

from reconciler.outcome import BrokerError, ExecutionRequest
from reconciler.policy import STRATEGY_FILENAME
from reconciler.policy.cache import CompiledCache
from reconciler.policy.pool import CompilePool
from reconciler.sandbox import Sandbox
from tests.sandbox.conftest import TEST_LIMITS, Harness, LoopRunner, good_broker, leftover_processes


def test_a_result_whose_items_loop_forever_times_out_within_the_run(harness: Harness) -> None:
    """Before: the loop ran after the timers were off, until the hard CPU kill, and its output was lost."""
    code = (
        "class Endless(dict):\n"
        "    def items(self):\n"
        "        print('items of RESULT called')\n"
        "        while True:\n"
        "            pass\n"
        "RESULT = Endless(a=1)\n"
    )
    outcome = harness.run(code)
    assert outcome.status == "timed_out", (outcome.status, outcome.error)
    assert "items of RESULT called" in outcome.output
    assert "CpuTimeExceeded: CPU time limit exceeded" in (outcome.error or "") or "WallTimeExceeded" in (
        outcome.error or ""
    ), outcome.error
    assert 'File "<strategy>", line 5' in (outcome.error or "") or "line 4" in (outcome.error or "")


@pytest.mark.parametrize("raised", ["SystemExit", "KeyboardInterrupt", "RuntimeError"])
def test_a_state_whose_items_raise_is_the_strategys_failure(harness: Harness, raised: str) -> None:
    """Before: SystemExit here was recorded as "a fault of the service", with the output dropped."""
    code = (
        "class Trap(dict):\n"
        "    def items(self):\n"
        "        print('items of STATE called')\n"
        f"        raise {raised}('from items')\n"
        "STATE = Trap(n=1)\n"
        "print('run done')\n"
    )
    outcome = harness.run(code, state={"kept": True})
    assert outcome.status == "failed", (outcome.status, outcome.error)
    error = outcome.error or ""
    assert "storing RESULT and STATE as JSON ran the strategy's own code" in error, error
    assert f"{raised}: from items" in error and 'File "<strategy>", line 4' in error, error
    assert "fault of the service" not in error
    assert outcome.output == "run done\nitems of STATE called\n"
    assert outcome.state is None  # the previous STATE is kept


def test_a_result_subclass_still_stores_what_it_holds(harness: Harness) -> None:
    """Plain subclasses keep working: the conversion is the same, only now under the run's limits."""
    code = "class Tagged(dict):\n    pass\nRESULT = Tagged(a=[1, 2.5], b='x')\nSTATE['n'] = 1\n"
    outcome = harness.run(code)
    assert outcome.status == "succeeded", outcome.error
    assert outcome.result == {"a": [1, 2.5], "b": "x"}
    assert outcome.state == {"n": 1}


class _PlainCompiler(CompiledCache):
    """Compiles with Python's own compiler: no language policy at all, as an escape would leave it."""

    async def compile(self, code: str) -> bytes:
        return marshal.dumps(compile(code, STRATEGY_FILENAME, "exec"))


@pytest.fixture(scope="module")
def plain(loop_runner: LoopRunner) -> Iterator[Sandbox]:
    box = Sandbox(TEST_LIMITS, compiler=_PlainCompiler(CompilePool()))
    loop_runner.run(box.start())
    yield box
    loop_runner.run(box.close())


def _run_plain(loop_runner: LoopRunner, box: Sandbox, code: str) -> Any:
    request = ExecutionRequest("plain", "tenant-a", code, {}, {"kept": True})
    outcome = loop_runner.run(box.run(request, good_broker))
    assert loop_runner.run(leftover_processes(box)) == []
    return outcome


# A finaliser that would spin until the hard CPU kill if it ever ran after the report was built.
_SPIN = "class Spin:\n    def __del__(self):\n        while True:\n            pass\n"


def test_finalisers_never_run_after_the_report(loop_runner: LoopRunner, plain: Sandbox) -> None:
    """Objects of the strategy's, in its namespace and in its exception's frames, are never freed.

    A run that spun in a finaliser would take at least the CPU limit (1 s of CPU is at least 1 s of
    wall time), and be killed: this one ends as the strategy ended it, sooner than that.
    """
    code = _SPIN + "kept = Spin()\ndef fail():\n    local = Spin()\n    raise ValueError('the run failed')\nfail()\n"
    outcome = _run_plain(loop_runner, plain, code)
    assert outcome.status == "failed", (outcome.status, outcome.error)
    assert "ValueError: the run failed" in (outcome.error or ""), outcome.error
    assert outcome.duration < TEST_LIMITS.cpu_seconds, outcome.duration


def test_a_changed_limit_exception_is_not_formatted_with_the_strategys_code(
    loop_runner: LoopRunner, plain: Sandbox
) -> None:
    """The strategy catches its timeout, gives it an argument whose `__str__` spins, and raises it
    again: the recorded timeout is built from our own text, not by calling that `__str__`."""
    code = (
        "class Loud:\n"
        "    def __str__(self):\n"
        "        while True:\n"
        "            pass\n"
        "try:\n"
        "    while True:\n"
        "        pass\n"
        "except BaseException as exc:\n"
        "    exc.args = (Loud(),)\n"
        "    exc.__notes__ = [Loud()]\n"
        "    raise\n"
    )
    outcome = _run_plain(loop_runner, plain, code)
    assert outcome.status == "timed_out", (outcome.status, outcome.error)
    error = outcome.error or ""
    assert "CpuTimeExceeded: CPU time limit exceeded" in error or "WallTimeExceeded: wall-clock" in error, error
    assert 'File "<strategy>", line 6' in error or 'File "<strategy>", line 7' in error, error


def test_unrestricted_code_reports_normally(loop_runner: LoopRunner, plain: Sandbox) -> None:
    """The fixture itself: plain Python runs and reports in the confinement (so the tests above test it)."""
    # The policy refuses any name starting with an underscore.
    outcome = _run_plain(loop_runner, plain, "RESULT = (1).__class__.__name__\n")
    assert outcome.status == "succeeded", outcome.error
    assert outcome.result == "int"


# Found by a hostile-tenant session against the first version of this path: formatting the strategy's
# exception runs its code too (`traceback` reads a SyntaxError's `text`, `lineno`... directly).
_SYNTAX_ERROR_WITH_A_TRAP = (
    "class Trap(SyntaxError):\n    @property\n    def text(self):\n        raise ValueError('from the text property')\n"
)


def test_an_exception_whose_formatting_raises_is_the_strategys_failure(harness: Harness) -> None:
    """Before: the run was recorded as a fault of the service, and its output was lost."""
    outcome = harness.run("print('printed before')\n" + _SYNTAX_ERROR_WITH_A_TRAP + "raise Trap('x')\n")
    assert outcome.status == "failed", (outcome.status, outcome.error)
    error = outcome.error or ""
    assert "Trap was raised, and showing it raised ValueError" in error, error
    assert "fault of the service" not in error
    assert outcome.output == "printed before\n"


def test_a_generator_freed_with_a_failed_format_runs_nothing_after_the_report(harness: Harness) -> None:
    """The exception that formatting raised holds a frame holding a suspended generator: freeing it
    would run the generator's `finally` with the limits off. Before, that ran until the hard CPU kill;
    now it is never freed, and the run ends as soon as its report is sent (well under the 1 s CPU
    limit that a spin would need at least)."""
    code = (
        "def spin_on_close():\n"
        "    try:\n"
        "        yield 1\n"
        "    finally:\n"
        "        while True:\n"
        "            pass\n"
        "class Trap(SyntaxError):\n"
        "    @property\n"
        "    def text(self):\n"
        "        held = spin_on_close()\n"
        "        next(held)\n"
        "        raise ValueError('from the text property')\n"
        "raise Trap('x')\n"
    )
    outcome = harness.run(code)
    assert outcome.status == "failed", (outcome.status, outcome.error)
    assert "Trap was raised, and showing it raised ValueError" in (outcome.error or ""), outcome.error
    assert outcome.duration < TEST_LIMITS.cpu_seconds, outcome.duration


def test_a_limit_swallowed_while_the_error_is_formatted_still_times_the_run_out(harness: Harness) -> None:
    """`traceback` shows a `str()` that raises as "<exception str() failed>" with a bare `except:`,
    which would swallow the limit's exception raised inside a `str()` that loops."""
    code = (
        "import collections\n"
        "class Endless(collections.UserString):\n"
        "    @property\n"
        "    def data(self):\n"
        "        while True:\n"
        "            pass\n"
        "    @data.setter\n"
        "    def data(self, value):\n"
        "        pass\n"
        "raise ValueError(Endless('x'))\n"
    )
    outcome = harness.run(code)
    assert outcome.status == "timed_out", (outcome.status, outcome.error)
    error = outcome.error or ""
    assert "CpuTimeExceeded: CPU time limit exceeded" in error or "WallTimeExceeded: wall-clock" in error, error


def test_no_client_call_goes_out_once_a_limit_fired(harness: Harness) -> None:
    """A strategy that catches its timeout cannot go on trading until the kill."""
    calls: list[str] = []

    async def broker(method: str, params: dict[str, Any]) -> Any:
        calls.append(method)
        return []

    code = (
        "client.get_balances()\n"
        "try:\n"
        "    while True:\n"
        "        pass\n"
        "except BaseException:\n"
        "    pass\n"
        "try:\n"
        "    client.get_balances()\n"
        "except ExchangeError as exc:\n"
        "    print('refused:', exc.kind)\n"
    )
    outcome = harness.run(code, broker=broker)
    assert calls == ["get_balances"]
    assert outcome.status == "timed_out", (outcome.status, outcome.error)
    assert "refused: limit_refused" in outcome.output, outcome.output


# -- which exceptions mean "out of memory" ------------------------------------------------------------

# A MemoryError that only an exception group holds: raised by a real allocation past the limit, or
# raised as it is, beside another error, nested one group deeper.
_GROUPED_MEMORY_ERRORS = {
    "allocation": (
        "try:\n    hoard = 'a' * (1 << 30)\nexcept MemoryError as exc:\n    caught = exc\n"
        "raise ExceptionGroup('batch', [caught])\n"
    ),
    "beside-another": "raise ExceptionGroup('batch', [ValueError('bad row'), MemoryError()])\n",
    "nested": "raise ExceptionGroup('outer', [ExceptionGroup('inner', [KeyError('k'), MemoryError()])])\n",
}


@pytest.mark.parametrize("name", list(_GROUPED_MEMORY_ERRORS))
def test_a_memory_error_in_an_exception_group_is_memory_exceeded(harness: Harness, name: str) -> None:
    """Before: only `__cause__` and `__context__` were followed, so these were recorded `failed`."""
    outcome = harness.run(_GROUPED_MEMORY_ERRORS[name])
    assert outcome.status == "memory_exceeded", (outcome.status, outcome.error)
    assert "ExceptionGroup" in (outcome.error or ""), outcome.error


@pytest.mark.parametrize("name", list(_GROUPED_MEMORY_ERRORS))
def test_a_memory_error_in_an_exception_group_is_memory_exceeded_unrestricted(
    loop_runner: LoopRunner, plain: Sandbox, name: str
) -> None:
    outcome = _run_plain(loop_runner, plain, _GROUPED_MEMORY_ERRORS[name])
    assert outcome.status == "memory_exceeded", (outcome.status, outcome.error)


def test_a_group_without_a_memory_error_still_fails(harness: Harness) -> None:
    outcome = harness.run("raise ExceptionGroup('batch', [ValueError('bad row'), KeyError('k')])\n")
    assert outcome.status == "failed", (outcome.status, outcome.error)
    assert "ExceptionGroup: batch (2 sub-exceptions)" in (outcome.error or ""), outcome.error


# Groups and chains that lie about what they hold: a subclass's `exceptions` or `__cause__` property
# is not what decides (only the group's and the exception's own stored fields are read), and a chain
# that loops back on itself through a group ends the walk. Showing the exception still calls them,
# under the run's limits, as it did: here that raises, and is described as such.
_LYING_CHAINS = {
    "exceptions-property-raises": (
        "class Lying(ExceptionGroup):\n"
        "    @property\n"
        "    def exceptions(self):\n"
        "        raise SystemExit('from exceptions')\n"
        "raise Lying('batch', [MemoryError()])\n",
        "memory_exceeded",
    ),
    "cause-property-raises": (
        "class Lying(ValueError):\n"
        "    @property\n"
        "    def __cause__(self):\n"
        "        raise SystemExit('from __cause__')\n"
        "try:\n"
        "    raise MemoryError()\n"
        "except MemoryError:\n"
        "    raise Lying('no memory')\n",
        "memory_exceeded",
    ),
    "chain-loops-through-a-group": (
        "inner = ValueError('inner')\n"
        "group = ExceptionGroup('batch', [inner])\n"
        "inner.__context__ = group\n"
        "raise group\n",
        "failed",
    ),
}


@pytest.mark.parametrize("name", list(_LYING_CHAINS))
def test_a_lying_group_or_chain_is_judged_by_what_it_holds(loop_runner: LoopRunner, plain: Sandbox, name: str) -> None:
    """Before: a property that raised decided the run `failed` though it held a MemoryError."""
    code, status = _LYING_CHAINS[name]
    outcome = _run_plain(loop_runner, plain, code)
    assert outcome.status == status, (outcome.status, outcome.error)
    assert outcome.duration < TEST_LIMITS.cpu_seconds, outcome.duration


# -- output and reports when the strategy has used all of its memory -----------------------------------

# Fills the address space in ever smaller strings, down to a single character, all kept in `hoard`.
_FILL_TO_THE_LAST_BYTES = (
    "hoard = []\n"
    "size = 1 << 20\n"
    "while size >= 1:\n"
    "    try:\n"
    "        hoard.append('a' * size)\n"
    "    except MemoryError:\n"
    "        size //= 2\n"
)
# Fills the address space to the last few bytes and keeps it all: then prints while nothing is left
# (each print may fail; the strategy carries on), and ends either by failing one more allocation or
# normally, leaving its report to be built and sent in what memory it left.
_FILL = (
    "log('before the fill')\n"
    + _FILL_TO_THE_LAST_BYTES
    + ("for i in range(100):\n    try:\n        log('line', i, 'y' * 100)\n    except MemoryError:\n        pass\n")
)
# Fills memory, then raises a group whose `exceptions` property (read when its traceback is shown,
# after the reserve for the report was released) fills it again: found by a hostile-tenant session,
# which lost every line printed before the fill this way.
_GREEDY_GROUP = (
    "log('before the fill')\n"
    "hoard = []\n"
    "def fill():\n"
    "    size = 1 << 20\n"
    "    while size >= 1:\n"
    "        try:\n"
    "            hoard.append('a' * size)\n"
    "        except MemoryError:\n"
    "            size //= 2\n"
    "class Greedy(ExceptionGroup):\n"
    "    @property\n"
    "    def exceptions(self):\n"
    "        fill()\n"
    "        return ()\n"
    "fill()\n"
    "raise Greedy('boom', [MemoryError()])\n"
)
_FULL_MEMORY = {
    "ends-by-a-failed-allocation": _FILL + "hoard.append('z' * (1 << 30))\n",
    "ends-normally": _FILL + "RESULT = {'lines': 100}\n",
    "showing-its-error-fills-the-reserve": _GREEDY_GROUP,
}


def _assert_output_kept(outcome: Any) -> None:
    error = outcome.error or ""
    assert "fault of the service" not in error, error
    assert outcome.output.startswith("[info] before the fill\n"), outcome.output[:200]
    # Each line that was printed is there once, in order: none lost to a failed send, none sent twice.
    numbers = [int(line.split()[2]) for line in outcome.output.splitlines()[1:] if line.startswith("[info] line ")]
    assert numbers == sorted(set(numbers)), numbers


@pytest.mark.parametrize("name", list(_FULL_MEMORY))
def test_output_printed_with_memory_full_is_kept(harness: Harness, name: str) -> None:
    """Before: a send that failed for lack of memory had already taken its chunks out, so everything
    pending (here even the line printed before the fill) was lost; a report that then did not fit was
    recorded without any output."""
    outcome = harness.run(_FULL_MEMORY[name])
    _assert_output_kept(outcome)
    if name == "ends-by-a-failed-allocation":
        assert outcome.status == "memory_exceeded", (outcome.status, outcome.error)
        assert "MemoryError" in (outcome.error or ""), outcome.error
    elif name == "showing-its-error-fills-the-reserve":
        assert outcome.status == "memory_exceeded", (outcome.status, outcome.error)
    else:  # its RESULT and STATE may or may not fit in what it left
        assert outcome.status in ("succeeded", "memory_exceeded"), (outcome.status, outcome.error)


@pytest.mark.parametrize("name", list(_FULL_MEMORY))
def test_output_printed_with_memory_full_is_kept_unrestricted(
    loop_runner: LoopRunner, plain: Sandbox, name: str
) -> None:
    outcome = _run_plain(loop_runner, plain, _FULL_MEMORY[name])
    _assert_output_kept(outcome)
    assert outcome.status in ("succeeded", "memory_exceeded"), (outcome.status, outcome.error)


# -- the broker channel after a client call that failed part way ----------------------------------------

_BIG_REPLY_CHARS = 6 << 20  # a reply bigger than what the strategy below leaves free


def _two_call_broker(delay: float = 0.0) -> Any:
    """get_ticker answers a large value (after `delay`), get_balances a small one: a reply read for the
    wrong call is easy to tell."""

    async def broker(method: str, params: dict[str, Any]) -> Any:
        if method == "get_ticker":
            if delay:
                await asyncio.sleep(delay)
            return [{"market": "BIG", "blob": "b" * _BIG_REPLY_CHARS}]
        if method == "get_balances":
            return [{"currency": "INR", "balance": "2"}]
        raise BrokerError("unsupported", method)

    return broker


# Fills memory in 1 MiB steps, gives back 3 MiB (enough for small allocations, not for the 6 MiB reply),
# makes a call whose reply cannot be read in that room, catches the MemoryError, frees everything and
# makes another call.
_CALL_WITH_MEMORY_FULL = (
    "hoard = []\n"
    "try:\n"
    "    while True:\n"
    "        hoard.append('a' * (1 << 20))\n"
    "except MemoryError:\n"
    "    pass\n"
    "hoard.pop()\n"
    "hoard.pop()\n"
    "hoard.pop()\n"
    "try:\n"
    "    big = client.get_ticker()\n"
    "    log('first call answered', len(big[0]['blob']))\n"
    "except MemoryError:\n"
    "    log('first call: MemoryError')\n"
    "hoard = None\n"
    "try:\n"
    "    second = client.get_balances()\n"
    "    log('second call answered', second[0]['market'] if 'market' in second[0] else second)\n"
    "except ExchangeError as exc:\n"
    "    log('second call refused:', exc.kind)\n"
    "except Exception as exc:\n"
    "    log('second call raised:', exc)\n"
)


def _assert_refused_after_broken_call(outcome: Any) -> None:
    output = outcome.output
    assert "second call answered" not in output and "second call raised" not in output, output
    assert "second call refused: unavailable" in output, output
    assert outcome.status == "memory_exceeded", (outcome.status, outcome.error)
    error = outcome.error or ""
    assert "get_ticker" in error and "MemoryError" in error and "refused" in error, error
    assert "fault of the service" not in error, error


def test_a_reply_that_ran_out_of_memory_part_way_is_never_taken_for_the_next(harness: Harness) -> None:
    """Before: the MemoryError left the rest of the reply in the socket, and the next call read it as
    its own reply (here a frame header made of JSON text, which raised ProtocolError)."""
    outcome = harness.run(_CALL_WITH_MEMORY_FULL, broker=_two_call_broker())
    assert "first call: MemoryError" in outcome.output, outcome.output
    _assert_refused_after_broken_call(outcome)


def test_a_reply_that_ran_out_of_memory_part_way_is_never_taken_for_the_next_unrestricted(
    loop_runner: LoopRunner, plain: Sandbox
) -> None:
    request = ExecutionRequest("plain", "tenant-a", _CALL_WITH_MEMORY_FULL, {}, {"kept": True})
    outcome = loop_runner.run(plain.run(request, _two_call_broker()))
    assert loop_runner.run(leftover_processes(plain)) == []
    assert "first call: MemoryError" in outcome.output, outcome.output
    _assert_refused_after_broken_call(outcome)


def test_a_reply_not_read_at_all_is_never_taken_for_the_next_calls(loop_runner: LoopRunner, plain: Sandbox) -> None:
    """A MemoryError raised before a single byte of the reply is read (here by a signal handler, as
    the child's own periodic one can with memory full) leaves the whole reply in the socket.
    Before: the next call got that reply as its own answer (the ticker for get_balances)."""
    code = (
        # The builtins' `__import__` is the policy's even here: the modules come from the runtime's globals.
        "cells = [cell.cell_contents for cell in type(client).get_ticker.__closure__]\n"
        "runtime = [f for f in cells if callable(f) and f.__name__ == '_forward_call'][0].__globals__\n"
        "signal, time = runtime['signal'], runtime['time']\n"
        "def no_memory(signum, frame):\n"
        "    raise MemoryError()\n"
        "signal.signal(signal.SIGALRM, no_memory)\n"
        "try:\n"
        "    client.get_ticker()\n"
        "    log('first call answered')\n"
        "except MemoryError:\n"
        "    log('first call: MemoryError')\n"
        "signal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
        "time.sleep(0.6)\n"  # the broker's reply to the first call is in the socket by now
        "try:\n"
        "    second = client.get_balances()\n"
        "    log('second call answered', second[0].get('market', second))\n"
        "except ExchangeError as exc:\n"
        "    log('second call refused:', exc.kind)\n"
        "except Exception as exc:\n"
        "    log('second call raised:', exc)\n"
    )
    request = ExecutionRequest("plain", "tenant-a", code, {}, {"kept": True})
    outcome = loop_runner.run(plain.run(request, _two_call_broker(delay=0.4)))
    assert loop_runner.run(leftover_processes(plain)) == []
    assert "first call: MemoryError" in outcome.output, outcome.output
    _assert_refused_after_broken_call(outcome)


# -- the output's flush boundary (8192 bytes pending) reached with memory full ---------------------------

_BOUNDARY_LINES = 24
# Fills memory to the last bytes, then writes lines of exactly 1024 bytes ("[info] ", 1016 characters
# and the newline), so that every eighth one takes the pending output to exactly 8192 bytes, where
# `write` flushes; each line is retried, after freeing a little of the hoard, until `log` returns.
# Every line must then be in the output exactly once, in order.
_LINES_AT_THE_FLUSH_BOUNDARY = (
    _FILL_TO_THE_LAST_BYTES + "def emit(number):\n"
    "    while True:\n"
    "        try:\n"
    "            log(str(number).zfill(4) + ' ' + 'y' * 1011)\n"
    "            return\n"
    "        except MemoryError:\n"
    "            if hoard:\n"
    "                hoard.pop()\n"
    f"for number in range({_BOUNDARY_LINES}):\n"
    "    emit(number)\n"
    f"RESULT = {{'lines': {_BOUNDARY_LINES}}}\n"
)


def _assert_each_line_once(outcome: Any) -> None:
    error = outcome.error or ""
    assert "fault of the service" not in error, error
    lines = outcome.output.splitlines()
    assert all(len(line) == 1023 for line in lines), [line[:20] for line in lines if len(line) != 1023]
    numbers = [int(line.split()[1]) for line in lines]
    assert numbers == list(range(_BOUNDARY_LINES)), numbers


def test_lines_that_reach_the_flush_boundary_with_memory_full_are_each_sent_once(harness: Harness) -> None:
    outcome = harness.run(_LINES_AT_THE_FLUSH_BOUNDARY)
    _assert_each_line_once(outcome)
    assert outcome.status in ("succeeded", "memory_exceeded"), (outcome.status, outcome.error)


def test_lines_that_reach_the_flush_boundary_with_memory_full_are_each_sent_once_unrestricted(
    loop_runner: LoopRunner, plain: Sandbox
) -> None:
    outcome = _run_plain(loop_runner, plain, _LINES_AT_THE_FLUSH_BOUNDARY)
    _assert_each_line_once(outcome)
    assert outcome.status in ("succeeded", "memory_exceeded"), (outcome.status, outcome.error)


# Fills memory to the last small block (every size class of the small-object allocator), then spins
# into the CPU limit with nothing left to allocate. The list, its indexes and the sizes are made
# first, so the fill allocates nothing but its strings (a chain of tuples filled the tuples' size
# class first and then stopped every smaller string, leaving room for an exception object).
_SPIN_WITH_MEMORY_FULL = (
    "client.get_balances()\n"
    "hoard = [None] * 200000\n"
    "places = iter(list(range(200000)))\n"
    "sizes = [1 << k for k in range(20, 8, -1)] + list(range(256, 1, -1))\n"
    "for size in sizes:\n"
    "    for place in places:\n"
    "        try:\n"
    "            hoard[place] = 'a' * size\n"
    "        except MemoryError:\n"
    "            break\n"
    "caught = None\n"
    "try:\n"
    "    while True:\n"
    "        pass\n"
    "except BaseException as exc:\n"
    "    caught = exc\n"
    "hoard = None\n"
    "log('caught a MemoryError' if isinstance(caught, MemoryError) else 'caught the limit')\n"
    "try:\n"
    "    client.get_balances()\n"
    "    log('second call answered')\n"
    "except ExchangeError as exc:\n"
    "    log('second call refused:', exc.kind)\n"
)


def _counting_broker(calls: list[str]) -> Any:
    async def broker(method: str, params: dict[str, Any]) -> Any:
        calls.append(method)
        return []

    return broker


def _assert_limit_recorded_with_memory_full(outcome: Any, calls: list[str]) -> None:
    assert calls == ["get_balances"], (calls, outcome.output)
    assert "second call refused: limit_refused" in outcome.output, outcome.output
    assert outcome.status == "timed_out", (outcome.status, outcome.error)
    assert "CpuTimeExceeded: CPU time limit exceeded" in (outcome.error or ""), outcome.error


def test_the_cpu_limit_is_recorded_with_memory_full(harness: Harness) -> None:
    """Before: the SIGXCPU handler built its exception with memory full, raised a MemoryError
    instead, and recorded no limit: the strategy caught it, freed its memory and traded on."""
    calls: list[str] = []
    outcome = harness.run(_SPIN_WITH_MEMORY_FULL, broker=_counting_broker(calls))
    _assert_limit_recorded_with_memory_full(outcome, calls)


def test_the_cpu_limit_is_recorded_with_memory_full_unrestricted(loop_runner: LoopRunner, plain: Sandbox) -> None:
    calls: list[str] = []
    request = ExecutionRequest("plain", "tenant-a", _SPIN_WITH_MEMORY_FULL, {}, {"kept": True})
    outcome = loop_runner.run(plain.run(request, _counting_broker(calls)))
    assert loop_runner.run(leftover_processes(plain)) == []
    _assert_limit_recorded_with_memory_full(outcome, calls)


def test_a_print_that_fails_part_way_writes_nothing(harness: Harness) -> None:
    """Before: print wrote each object and separator as it went, so 'first ' was kept from the failed
    print, and a strategy that printed again after catching the error had it twice."""
    # Showing a million strings of 100 characters takes over 100 MB, past the run's limit: the print
    # fails at its second object, after the first and a separator were written.
    code = (
        "rows = ['x' * 100] * 1000000\n"
        "for attempt in range(2):\n"
        "    try:\n"
        "        print('first', rows, 'last')\n"
        "    except MemoryError:\n"
        "        pass\n"
        "rows = None\n"
        "print('first', 'retried', sep='-', end='!\\n')\n"
    )
    outcome = harness.run(code)
    assert outcome.status == "succeeded", (outcome.status, outcome.error)
    assert outcome.output == "first-retried!\n", outcome.output


# A generator suspended in its `try`, left in a reference cycle: its `finally` prints when a cyclic
# collection frees it. With the threshold at 1, the first container the output's flush allocates
# (its frame) starts that collection: inside the flush, between joining the pending text and
# clearing it. Plain Python, since the policy has no `gc` and no attributes starting with `_`; the
# sandbox's import guard stands, so `gc` and `sys` are taken from the child's own module, as escaped
# code could.
_PRINT_FROM_A_COLLECTION_IN_THE_FLUSH = (
    "child = [c for c in object.__subclasses__() if c.__name__ == '_PrintCollector'][0]\n"
    "gc, sys = child._call_print.__globals__['gc'], child._call_print.__globals__['sys']\n"
    "class Box:\n"
    "    pass\n"
    "def trap():\n"
    "    try:\n"
    "        yield 1\n"
    "    finally:\n"
    "        sys.stdout.write('TRAP ran\\n')\n"
    "box = Box()\n"
    "box.g = trap()\n"
    "next(box.g)\n"
    "box.me = box\n"
    "del box\n"
    "gc.set_threshold(1)\n"
    "sys.stdout.write('x' * 9000 + '\\n')\n"
    "gc.set_threshold(700)\n"
    "gc.collect()  # where the cycle goes if the flush did not collect it\n"
    "sys.stdout.write('after\\n')\n"
)


def test_output_printed_by_a_finaliser_during_a_flush_is_sent(loop_runner: LoopRunner, plain: Sandbox) -> None:
    """Before: the finaliser's line was counted as kept but cleared with the chunks just sent."""
    outcome = _run_plain(loop_runner, plain, _PRINT_FROM_A_COLLECTION_IN_THE_FLUSH)
    assert outcome.status == "succeeded", (outcome.status, outcome.error)
    assert outcome.output.endswith("after\n"), outcome.output[-200:]
    assert "TRAP ran\n" in outcome.output, outcome.output[-200:]
    assert outcome.output.count("x" * 9000) == 1 and not outcome.output_truncated


# Prints to the strategy's stdout and stderr that fail at their second object (its `__str__` raises),
# through the interpreter's own `print` (as unrestricted code and the libraries call it) and through
# the strategy's `print` with `file=`; then one to an object of the strategy's own with a `write`,
# which gets the pieces as print writes them (that is the strategy's business, and stays so).
_PRINTS_THAT_FAIL_PART_WAY = (
    "collector = [c for c in object.__subclasses__() if c.__name__ == '_PrintCollector'][0]\n"
    "runtime = collector._call_print.__globals__\n"
    "sys, found = runtime['sys'], runtime['__builtins__']\n"
    "real_print = found['print'] if type(found) is dict else found.print\n"
    "class Bad:\n"
    "    def __str__(self):\n"
    "        raise ValueError('no text')\n"
    "class Sink:\n"
    "    def __init__(self):\n"
    "        self.parts = []\n"
    "    def write(self, text):\n"
    "        self.parts.append(text)\n"
    "for target in (None, sys.stdout, sys.stderr):\n"
    "    for how in (real_print, sys.stdout._call_print):\n"
    "        try:\n"
    "            how('first', Bad(), 'last', file=target)\n"
    "        except ValueError:\n"
    "            pass\n"
    "sink = Sink()\n"
    "try:\n"
    "    real_print('first', Bad(), file=sink)\n"
    "except ValueError:\n"
    "    pass\n"
    "real_print('to', 'stderr', sep='-', file=sys.stderr)\n"
    "real_print('to stdout', end='!\\n')\n"
    "RESULT = sink.parts\n"
)


def test_a_print_to_stdout_or_stderr_that_fails_part_way_writes_nothing_unrestricted(
    loop_runner: LoopRunner, plain: Sandbox
) -> None:
    """Before: only the policy's print to its default file was built whole; the interpreter's print,
    and the policy's with `file=sys.stderr` (or `sys.stdout`), kept 'first ' from each failed print."""
    outcome = _run_plain(loop_runner, plain, _PRINTS_THAT_FAIL_PART_WAY)
    assert outcome.status == "succeeded", (outcome.status, outcome.error)
    assert outcome.output == "to-stderr\nto stdout!\n", outcome.output
    assert outcome.result == ["first", " "]  # the strategy's own file: written as print writes it


# A finaliser in a reference cycle, run by the collector while get_ticker waits for its reply, which
# the broker delays past two of the child's ticks: the strategy's own handler of the tick runs a
# collection (as any allocation can) before the child's. Run earlier, the finaliser sets a new one in
# its place; run during the wait (`recv_frame` is on the stack), it calls the client. Plain Python,
# since the policy has no `gc`, `signal`, frames or `__del__`; they are taken from the child's module.
_CALL_FROM_A_FINALISER_WHILE_ANOTHER_WAITS = (
    "collector = [c for c in object.__subclasses__() if c.__name__ == '_PrintCollector'][0]\n"
    "runtime = collector._call_print.__globals__\n"
    "gc, sys, signal = runtime['gc'], runtime['sys'], runtime['signal']\n"
    "def waiting():\n"
    "    frame = sys._getframe(1)\n"
    "    while frame is not None and frame.f_code.co_name != 'recv_frame':\n"
    "        frame = frame.f_back\n"
    "    return frame is not None\n"
    "class Trap:\n"
    "    def __del__(self):\n"
    "        if not waiting():\n"
    "            arm()\n"
    "            return\n"
    "        try:\n"
    "            client.get_balances()\n"
    "            log('nested call answered')\n"
    "        except ExchangeError as exc:\n"
    "            log('nested call refused:', exc.kind)\n"
    "def arm():\n"
    "    trap = Trap()\n"
    "    trap.me = trap\n"
    "child_tick = signal.getsignal(signal.SIGALRM)\n"
    "def tick(signum, frame):\n"
    "    gc.collect(0)\n"
    "    child_tick(signum, frame)\n"
    "gc.disable()  # the trap stays young until a tick collects it\n"
    "arm()\n"
    "signal.signal(signal.SIGALRM, tick)\n"
    "ticker = client.get_ticker()\n"
    "signal.signal(signal.SIGALRM, child_tick)\n"
    "gc.enable()\n"
    "log('first call answered:', ticker[0]['market'])\n"
    "try:\n"
    "    client.get_balances()\n"
    "    log('later call answered')\n"
    "except ExchangeError as exc:\n"
    "    log('later call refused:', exc.kind)\n"
    "RESULT = 'not kept'\n"
)


async def _slow_ticker_broker(method: str, params: dict[str, Any]) -> Any:
    if method == "get_ticker":
        await asyncio.sleep(0.6)  # the child ticks every 0.25 s
        return [{"market": "BTCUSDT", "last_price": "64000.5"}]
    if method == "get_balances":
        return [{"currency": "INR", "balance": "2"}]
    raise BrokerError("unsupported", method)


def test_a_call_from_a_finaliser_while_another_waits_names_that_call_unrestricted(
    loop_runner: LoopRunner, plain: Sandbox
) -> None:
    """Before: the finaliser's call sent its request while get_ticker was still with the broker, and
    the run ended "sent the service something it cannot read", saying nothing of get_ticker."""
    request = ExecutionRequest("plain", "tenant-a", _CALL_FROM_A_FINALISER_WHILE_ANOTHER_WAITS, {}, {"kept": True})
    outcome = loop_runner.run(plain.run(request, _slow_ticker_broker))
    assert loop_runner.run(leftover_processes(plain)) == []
    assert outcome.output == (
        "[info] nested call refused: unavailable\n"
        "[info] first call answered: BTCUSDT\n"
        "[info] later call refused: unavailable\n"
    ), outcome.output
    assert outcome.status == "failed" and outcome.result is None and outcome.state is None, outcome
    error = outcome.error or ""
    assert "get_balances was made while the client call get_ticker was waiting for its reply" in error, error
    assert "get_ticker may have taken effect at the exchange" in error, error
    assert "fault of the service" not in error and "cannot read" not in error, error
