"""Hostile strategies, each through the real execution path (real Sandbox, real zygote, real fork).

Every case asserts the outcome recorded for the hostile run, and (in `Harness.run`) that a
well-behaved strategy running concurrently beside it succeeded with its exact result and state, that
the zygote and the supervisor's event loop are unaffected, that no process was left behind, and that
nothing recorded contains the planted secret.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.sandbox.conftest import PLANTED_SECRET, TEST_LIMITS, Harness


@dataclass(frozen=True)
class Case:
    id: str
    code: str
    status: str
    # Substrings the recorded error must contain; a tuple inside means "one of these".
    error: tuple[str | tuple[str, ...], ...] = ()
    line: int | tuple[int, ...] | None = None  # the strategy line(s) the traceback may point at
    config: dict[str, Any] = field(default_factory=dict)


CASES = [
    # On a loaded host 1 s of CPU can take longer than the 2 s wall limit: either limit may end it.
    Case(
        "infinite-loop",
        "x = 0\nwhile True:\n    x += 1\n",
        "timed_out",
        (("CPU time limit", "wall-clock time limit"),),
        line=(2, 3),
    ),  # the signal lands on either
    Case("sleep-past-wall", "import time\ntime.sleep(30)\n", "timed_out", ("wall-clock",), line=2),
    Case(
        "ignores-wall-alarm",
        "import time\nwhile True:\n    try:\n        time.sleep(30)\n    except BaseException:\n        pass\n",
        "timed_out",
        ("wall-clock time limit exceeded", "killed"),
    ),
    Case("allocate-1gb-str", "x = 'a' * (1 << 30)\n", "memory_exceeded", ("MemoryError",), line=1),
    Case("allocate-1gb-numpy", "a = np.ones(1 << 27)\n", "memory_exceeded", ("MemoryError",), line=1),
    Case(
        "allocate-1gb-gradually",
        "chunks = []\nwhile True:\n    chunks.append(' ' * (16 << 20))\n",
        "memory_exceeded",
        ("MemoryError",),
    ),
    Case("fork-bomb", "import os\nwhile True:\n    os.fork()\n", "failed", ("Policy violation", "'os'"), line=1),
    Case(
        "import-subprocess",
        "import subprocess\nsubprocess.run(['sh', '-c', 'id'])\n",
        "failed",
        ("Policy violation", "'subprocess'"),
        line=1,
    ),
    Case("import-socket", "import socket\n", "failed", ("Policy violation", "'socket'"), line=1),
    Case("import-ctypes", "import ctypes\n", "failed", ("Policy violation", "'ctypes'"), line=1),
    Case(
        "import-via-module-attribute",
        "import statistics\nstatistics.sys.modules['os'].system('id')\n",
        "failed",
        ("Policy violation", "'sys'"),
        line=2,
    ),
    Case("from-import-of-os-module", "from calendar import sys\n", "failed", ("Policy violation", "'sys'"), line=1),
    Case(
        "typing-get-type-hints",
        "import typing\ntyping.get_type_hints\n",
        "failed",
        ("Policy violation", "typing.get_type_hints"),
        line=2,
    ),
    Case("open-file", "data = open('/etc/passwd').read()\n", "failed", ("Policy violation", "open()"), line=1),
    Case(
        "subclasses-escape",
        "x = ().__class__.__base__.__subclasses__()\n",
        "failed",
        ("Policy violation", "__class__"),
        line=1,
    ),
    Case(
        "subclasses-escape-getattr",
        "base = getattr(getattr((), '__cl' + 'ass__'), '__base__')\n",
        "failed",
        ("Policy violation", "starts with"),
        line=1,
    ),
    Case(
        "subclasses-escape-mro",
        "obj = type(()).mro()[-1]\nsubs = getattr(obj, '__subclasses__')()\n",
        "failed",
        ("Policy violation",),
        line=2,
    ),
    Case(
        "generator-gi-frame",
        "def g():\n    yield 1\nf = g().gi_frame.f_back.f_globals\n",
        "failed",
        ("Policy violation", "gi_frame"),
        line=3,
    ),
    Case(
        "generator-frame-walk-runtime",
        "def g():\n    yield 1\ngen = g()\nframe = getattr(gen, 'gi_' + 'frame')\nup = getattr(frame, 'f_' + 'back')\n",
        "failed",
        ("Policy violation", "gi_frame"),
        line=4,
    ),
    Case(
        "traceback-frame-walk",
        "try:\n    1 / 0\nexcept ZeroDivisionError as exc:\n    tb = getattr(exc, '__trace' + 'back__')\n",
        "failed",
        ("Policy violation",),
        line=4,
    ),
    Case(
        "format-string-attribute",
        "s = '{0.__class__.__mro__}'.format(1)\n",
        "failed",
        ("Policy violation", "format"),
        line=1,
    ),
    Case(
        "format-map-attribute",
        "s = '{x.__class__}'.format_map({'x': 1})\n",
        "failed",
        ("Policy violation", "format"),
        line=1,
    ),
    Case(
        "string-formatter",
        "import string\nf = string.Formatter()\n",
        "failed",
        ("Policy violation", "Formatter"),
        line=2,
    ),
    Case(
        "pandas-read-csv-local", "df = pd.read_csv('/etc/passwd')\n", "failed", ("Policy violation", "read_csv"), line=1
    ),
    Case(
        "pandas-read-csv-url",
        "df = pd.read_csv('http://127.0.0.1:5432/x.csv')\n",
        "failed",
        ("Policy violation", "read_csv"),
        line=1,
    ),
    Case("pandas-read-pickle", "df = pd.read_pickle('/tmp/x.pkl')\n", "failed", ("Policy violation",), line=1),
    Case(
        "pandas-to-csv-file",
        "pd.DataFrame({'a': [1]}).to_csv('/tmp/owned.csv')\n",
        "failed",
        ("Policy violation", "cannot write files"),
        line=1,
    ),
    Case(
        "pandas-eval-escape", "pd.DataFrame({'a': [1]}).eval('a.__class__')\n", "failed", ("Policy violation",), line=1
    ),
    Case(
        "pandas-agg-string-dispatch",
        "pd.DataFrame({'a': [1]}).agg('eval', 'a')\n",
        "failed",
        ("Policy violation", "'eval'"),
        line=1,
    ),
    Case("numpy-load-local", "a = np.load('/etc/passwd')\n", "failed", ("Policy violation", "numpy.load"), line=1),
    Case(
        "numpy-fromfile-environ",
        "a = np.fromfile('/proc/self/environ', dtype='uint8')\n",
        "failed",
        ("Policy violation", "numpy.fromfile"),
        line=1,
    ),
    Case("numpy-save", "np.save('/tmp/owned.npy', np.arange(3))\n", "failed", ("Policy violation",), line=1),
    Case("numpy-tofile", "np.arange(3).tofile('/tmp/owned.bin')\n", "failed", ("Policy violation",), line=1),
    Case("numpy-ctypes", "p = np.arange(3).ctypes\n", "failed", ("Policy violation",), line=1),
    Case(
        "numpy-bit-generator-cffi",
        "p = np.random.default_rng(0).bit_generator.cffi\n",
        "failed",
        ("Policy violation", "cffi"),
        line=1,
    ),
    Case("numpy-lib-npyio", "f = np.lib.npyio\n", "failed", ("Policy violation",), line=1),
    Case(
        "numpy-forge-object-pointer",
        "a = np.ndarray((1,), object, bytes(8))\n",
        "failed",
        ("Policy violation", "raw buffer"),
        line=1,
    ),
    Case(
        "numpy-forge-via-type",
        "t = type(np.zeros(1))\na = t((1,), dtype=object, buffer=bytes(8))\n",
        "failed",
        ("Policy violation", "raw buffer"),
        line=2,
    ),
    Case(
        "numpy-recarray-forge",
        "a = np.recarray((1,), dtype=[('a', object)], buf=bytes(8))\n",
        "failed",
        ("Policy violation", "raw buffer"),
        line=1,
    ),
    Case(
        "singledispatch-forwardref-eval",
        "import functools\n@functools.singledispatch\ndef f(x):\n    return x\n",
        "failed",
        ("Policy violation", "singledispatch"),
        line=2,
    ),
    Case(
        "typing-namedtuple-forwardref",
        "import typing\nP = typing.NamedTuple('P', [('a', 'code')])\n",
        "failed",
        ("Policy violation", "NamedTuple"),
        line=2,
    ),
    Case(
        "string-annotation-eval",
        'def f(x: "().__class__"):\n    return x\n',
        "failed",
        ("Policy violation", "string annotations"),
        line=1,
    ),
    Case(
        "future-annotations",
        "from __future__ import annotations\n",
        "failed",
        ("Policy violation", "__future__"),
        line=1,
    ),
    Case("proc-self-environ", "env = pd.read_table('/proc/self/environ')\n", "failed", ("Policy violation",), line=1),
    Case("recursion-without-end", "def f(n):\n    return f(n + 1)\nf(0)\n", "failed", ("RecursionError",), line=2),
    Case("raise-system-exit", "raise SystemExit(0)\n", "failed", ("SystemExit",), line=1),
    # A MemoryError is memory_exceeded wherever it happens: caught and re-raised as another error, or
    # while the report is built after the strategy's code ended (an exit without a report, before).
    Case(
        "memory-error-re-raised-as-another-error",
        "try:\n    a = np.ones(1 << 27)\nexcept MemoryError:\n    raise ValueError('no memory')\n",
        "memory_exceeded",
        ("ValueError: no memory",),
        line=4,
    ),
    Case(
        "result-too-big-to-serialise",
        "RESULT = 'x' * (60 << 20)\n",
        "memory_exceeded",
        ("storing its RESULT and STATE as JSON ran out of memory",),
    ),
    Case(
        "state-too-big-to-serialise",
        "STATE['big'] = 'y' * (60 << 20)\n",
        "memory_exceeded",
        ("storing its RESULT and STATE as JSON ran out of memory",),
    ),
    # -- library helpers that read or write attributes by a name the strategy chooses -------------------
    Case(
        "update-wrapper-copies-library-globals",
        "import functools, statistics\ndef f():\n    pass\n"
        "functools.update_wrapper(f, statistics.mean, (), ('__globals__',))\nRESULT = str(sys)\n",
        "failed",
        ("Policy violation", "update_wrapper"),
        line=4,
    ),
    Case(
        "wraps-with-chosen-names",
        "import functools, statistics\n@functools.wraps(statistics.mean, updated=('__globals__',))\n"
        "def f():\n    pass\n",
        "failed",
        ("Policy violation", "wraps"),
        line=2,
    ),
    Case(
        "userstring-format-reads-attributes",
        "import collections\nRESULT = collections.UserString('{0.__class__.__mro__}').format(1)\n",
        "failed",
        ("Policy violation", "format"),
        line=2,
    ),
    Case(
        "copy-reducer-sets-chosen-attributes",
        "import copy\nclass C:\n    pass\n"
        "copy.dispatch_table[C] = lambda c: (C, (), (None, {'__class__': int}))\ncopy.copy(C())\n",
        "failed",
        ("Policy violation", "copy.dispatch_table"),
        line=4,
    ),
    Case(
        "agg-names-in-an-array",
        "df = pd.DataFrame({'a': [1, 2]})\nRESULT = str(df.agg(np.array(['__sizeof__'])))\n",
        "failed",
        ("Policy violation", "'__sizeof__'"),
        line=2,
    ),
    Case(
        "pivot-table-aggfunc-name",
        "df = pd.DataFrame({'a': [1, 2], 'b': [1, 2]})\n"
        "RESULT = str(pd.pivot_table(df, index='a', values='b', aggfunc='__reduce__'))\n",
        "failed",
        ("Policy violation", "'__reduce__'"),
        line=2,
    ),
    Case(
        "groupby-named-agg-name",
        "df = pd.DataFrame({'a': [1, 1], 'b': [2, 3]})\n"
        "RESULT = str(df.groupby('a').agg(x=pd.NamedAgg('b', '__sizeof__')))\n",
        "failed",
        ("Policy violation", "'__sizeof__'"),
        line=2,
    ),
    Case(
        "column-expression-agg-name",
        "df = pd.DataFrame({'b': [2, 3]})\nRESULT = str(df.assign(c=pd.col('b').agg('__sizeof__')))\n",
        "failed",
        ("Policy violation", "'__sizeof__'"),
        line=2,
    ),
    # -- type() with one argument, and other routes to a metaclass -----------------------------------
    Case(
        "type-of-a-class-forges-an-array",
        "T = type(int)\nX = T('X', (), {'__array_interface__': {'shape': (1,), 'typestr': '|O',"
        " 'data': (8, False), 'version': 3}})\nRESULT = repr(np.asarray(X()))\n",
        "failed",
        ("Policy violation", "type() of a class"),
        line=1,
    ),
    Case(
        "type-of-the-array-guard",
        "M = type(np.ndarray)\nX = M('X', (), {'_real': int})\n",
        "failed",
        ("Policy violation", "type() of a class"),
        line=1,
    ),
    Case(
        "metaclass-from-a-module",
        "import numbers\nM = numbers.ABCMeta\nX = M('X', (), {'__array_interface__': {}})\n",
        "failed",
        ("Policy violation", "metaclasses (abc.ABCMeta)"),
        line=2,
    ),
    # -- classes that lie about being library code ----------------------------------------------------
    Case(
        "metaclass-lies-about-the-mro",
        "class M(type(pd.DataFrame)):\n    def mro(cls):\n        return [cls, object]\n"
        "F = M('F', (pd.DataFrame,), {})\nF({'a': [1]}).to_csv('/tmp/owned-mro.csv')\n",
        "failed",
        ("Policy violation", "type() of a class"),
        line=1,
    ),
    Case(
        "library-classes-renamed-to-strategy-code",
        "import functools\ndef f():\n    pass\nfor cls in pd.DataFrame.mro():\n"
        "    functools.update_wrapper(cls, f)\npd.DataFrame({'a': [1]}).to_csv('/tmp/owned-module.csv')\n",
        "failed",
        ("Policy violation", "update_wrapper() can only update the strategy's own"),
        line=5,
    ),
    Case(
        "subclass-of-a-metaclass-from-a-module",
        "import numbers\nclass M(numbers.ABCMeta):\n    def mro(cls):\n        return [cls, object]\n",
        "failed",
        ("Policy violation", "metaclasses"),
        line=2,
    ),
    # -- memory-unsafe numpy and pandas operations ---------------------------------------------------
    Case(
        "resize-without-reference-check",
        "a = np.arange(10)\nb = a[2:]\na.resize(1 << 20, refcheck=False)\nb[:] = 7\n",
        "failed",
        ("Policy violation", "refcheck=False"),
        line=3,
    ),
    Case(
        "resize-without-reference-check-unbound",
        "a = np.arange(10)\nb = a[2:]\nnp.ndarray.resize(a, 1 << 20, refcheck=False)\n",
        "failed",
        ("Policy violation", "refcheck=False"),
        line=3,
    ),
    Case(
        "real-ndarray-from-the-mro",
        "nd = np.matrix.mro()[1]\na = nd((1,), object, bytes(8))\nRESULT = repr(a)\n",
        "failed",
        ("Policy violation", "raw buffer"),
        line=2,
    ),
    Case(
        "real-ndarray-from-typing-type-mro",
        "import typing\nnd = typing.Type.mro(np.matrix)[1]\na = nd((1,), object, bytes(8))\n",
        "failed",
        ("Policy violation", "raw buffer"),
        line=3,
    ),
    Case(
        "object-view-of-integers",
        "a = np.zeros(4, dtype=np.int64)\nb = a.view(object)\n",
        "failed",
        ("TypeError", "array of references"),
        line=2,
    ),
    Case(
        "object-field-of-integers",
        "a = np.zeros(4, dtype=np.int64)\na.setfield(5, object, 0)\n",
        "failed",
        ("TypeError", "object array"),
        line=2,
    ),
    Case(
        "client-call-flood",
        "while True:\n    client.get_ticker()\n",
        "failed",
        ("ExchangeError", "more than 1000 client calls"),
        line=2,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_case(harness: Harness, case: Case) -> None:
    outcome = harness.run(case.code, config=case.config)
    assert outcome.status == case.status, outcome
    for fragment in case.error:
        alternatives = fragment if isinstance(fragment, tuple) else (fragment,)
        assert any(text in (outcome.error or "") for text in alternatives), outcome.error
    if case.line is not None:
        lines = case.line if isinstance(case.line, tuple) else (case.line,)
        assert any(
            f'File "<strategy>", line {line}' in (outcome.error or "")
            or f"line {line}," in (outcome.error or "")  # compile-time policy errors: "line N, column M"
            for line in lines
        ), outcome.error
    assert outcome.state is None  # a run that did not succeed never replaces the stored STATE


def test_no_file_was_written_by_the_cases_above() -> None:
    for path in ("/tmp/owned.csv", "/tmp/owned.npy", "/tmp/owned.bin", "/tmp/owned-mro.csv", "/tmp/owned-module.csv"):
        assert not os.path.exists(path)


def test_print_100_mb_is_capped_with_a_marker(harness: Harness) -> None:
    outcome = harness.run("chunk = 'x' * 1000000\nfor i in range(100):\n    print(chunk)\nRESULT = 'done'\n")
    assert outcome.status == "succeeded", outcome
    assert outcome.result == "done"
    assert outcome.output_truncated
    assert outcome.output.startswith("x" * 1000)
    kept = outcome.output.split("\n[output truncated:")[0]
    assert len(kept.encode()) <= TEST_LIMITS.output_bytes
    assert "[output truncated:" in outcome.output and "bytes over the 65536-byte cap" in outcome.output


def test_huge_result_is_replaced_by_a_truncation_marker(harness: Harness) -> None:
    outcome = harness.run("RESULT = {'blob': 'y' * (10 << 20)}\n")
    assert outcome.status == "succeeded", outcome
    assert outcome.result["truncated"] is True
    assert outcome.result["original_bytes"] > 10 << 20
    assert len(outcome.result["preview"]) <= 1024


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("STATE = {'positions': {1, 2}}\n", "STATE is not JSON"),
        ("STATE = 'not a dict'\n", "STATE must be a dict"),
        ("STATE['nan'] = float('nan')\n", "STATE is not JSON"),
        ("STATE['big'] = 'z' * 100000\n", "over the cap"),
    ],
    ids=["set", "string", "nan", "over-cap"],
)
def test_state_that_is_not_json_fails_and_keeps_the_old_state(harness: Harness, code: str, message: str) -> None:
    outcome = harness.run(code, state={"kept": True})
    assert outcome.status == "failed"
    assert message in (outcome.error or "")
    assert "previous STATE is kept" in (outcome.error or "")
    assert outcome.state is None


def test_database_port_is_unreachable(harness: Harness, fake_database: socket.socket) -> None:
    port = fake_database.getsockname()[1]
    code = (
        "port = CONFIG['port']\n"
        "tried = []\n"
        "for attempt in [\n"
        "    lambda: pd.read_csv('http://127.0.0.1:' + str(port) + '/'),\n"
        "    lambda: pd.read_json('http://127.0.0.1:' + str(port) + '/'),\n"
        "    lambda: np.DataSource().open('http://127.0.0.1:' + str(port) + '/'),\n"
        "    lambda: pd.io,\n"
        "]:\n"
        "    try:\n"
        "        attempt()\n"
        "        tried.append('CONNECTED')\n"
        "    except Exception as exc:\n"
        "        tried.append('denied' if isinstance(exc, PolicyViolation) else repr(exc))\n"
        "RESULT = tried\n"
    )
    outcome = harness.run(code, config={"port": port})
    assert outcome.status == "succeeded", outcome
    assert outcome.result == ["denied"] * 4
    with pytest.raises(BlockingIOError):
        fake_database.accept()  # nothing ever connected to the "database"


def test_search_everything_reachable_for_another_tenants_secret(harness: Harness) -> None:
    """Walk every object reachable from the strategy's globals and try every file and /proc path it
    could name (its own and the supervisor's environ, cmdline and mem) with every reader it has; also
    ask the broker, whose closure holds the secret. The planted secret must appear nowhere."""
    code = """
found = []
seen = []
def look(value, path, depth):
    if depth > 3 or len(seen) > 20000:
        return
    for other in seen:
        if other is value:
            return
    seen.append(value)
    text = ''
    try:
        text = str(value)
    except Exception:
        pass
    if 'sk-live' in text:
        found.append(path)
    for name in ['CONFIG', 'STATE', 'environ', 'env', 'secret', 'api_secret', 'credentials', 'options',
                 'random', 'linalg', 'api', 'errors', 'offsets', 'DataFrame', 'Series', 'core', 'io',
                 'modules', 'os', 'sys', 'globals', 'closure', 'cell_contents', 'values', 'index',
                 'columns', 'dtypes', 'T', 'iloc', 'loc', 'str', 'dt', 'base', 'flags', 'attrs', 'types',
                 'arrays', 'tseries', 'frequencies', 'fft', 'polynomial', 'dtype', 'type', 'kind', 'mro',
                 'default_rng', 'bit_generator', 'state', 'shape', 'data', 'display', 'mode', 'compute',
                 'kind', 'message', 'args', 'get_ticker', 'create_order', 'info', 'warning']:
        try:
            child = getattr(value, name)
        except Exception:
            continue
        look(child, path + '.' + name, depth + 1)
    if isinstance(value, dict):
        for key in list(value):
            look(value[key], path + '[' + repr(key) + ']', depth + 1)
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            look(item, path + '[' + str(index) + ']', depth + 1)

frame = pd.DataFrame({'close': np.arange(5.0)}, index=pd.date_range('2024-01-01', periods=5))
roots = {'CONFIG': CONFIG, 'STATE': STATE, 'pd': pd, 'np': np, 'client': client, 'log': log,
         'frame': frame, 'array': np.arange(3), 'rng': np.random.default_rng(0),
         'CoinDCXClient': CoinDCXClient, 'ExchangeError': ExchangeError}
for root_name in roots:
    look(roots[root_name], root_name, 0)

"""
    code += """
pids = CONFIG['pids']
paths = []
for pid in pids:
    for leaf in ['environ', 'cmdline', 'mem', 'maps']:
        paths.append('/proc/' + str(pid) + '/' + leaf)
paths += ['/proc/self/environ', '/proc/1/environ', '/etc/shadow']
attempts = []
def try_pd(path):
    return pd.read_csv(path)
def try_np(path):
    return np.fromfile(path)
def try_table(path):
    return pd.read_table(path)
for path in paths:
    for reader in [try_pd, try_np, try_table]:  # open() is refused before the code runs
        try:
            data = reader(path)
            if 'sk-live' in str(data):
                found.append(path)
            attempts.append('READ ' + path)
        except Exception as exc:
            attempts.append(repr(exc))
replies = []
for method in ['get_balances', 'get_user_info', 'get_ticker']:
    try:
        replies.append(str(getattr(client, method)()))
    except ExchangeError as exc:
        replies.append(exc.kind + ': ' + exc.message)
for reply in replies:
    if 'sk-live' in reply:
        found.append('broker')
RESULT = {'found': found, 'reads': [a for a in attempts if a.startswith('READ')],
          'denied': len(attempts), 'replies': replies, 'objects': len(seen)}
"""
    pids = [os.getpid(), os.getppid(), harness.box._zygote.process.pid]  # type: ignore[union-attr]
    outcome = harness.run(code, config={"pids": pids})
    assert outcome.status == "succeeded", outcome.error
    assert outcome.result["found"] == []
    assert outcome.result["reads"] == []
    assert outcome.result["denied"] == (len(pids) * 4 + 3) * 3
    assert outcome.result["objects"] > 100, outcome.result["objects"]  # the walk really ran
    assert outcome.result["replies"][0].startswith(
        "internal: get_balances: the service failed while handling this call (reference "
    )
    assert outcome.result["replies"][1] == "rejected: not allowed for this strategy"
    assert PLANTED_SECRET not in repr(outcome)


def test_every_slot_spinning_at_once_does_not_starve_the_replica(harness: Harness) -> None:
    """Five slots on two cores running `while True: pass` together, plus the well-behaved strategy:
    the supervisor's event loop keeps its pace and the good strategy its result. (The children's
    lower priority, niceness 10, is checked in test_layers; this holds even without it on an
    otherwise idle host, so it is a check of the outcome, not of the mechanism.)"""
    import asyncio

    from reconciler.outcome import ExecutionRequest
    from tests.sandbox.conftest import GOOD_STRATEGY, good_broker

    box = harness.box

    async def scenario() -> tuple[list[Any], Any, float]:
        lag, done = 0.0, asyncio.Event()

        async def monitor() -> None:
            nonlocal lag
            loop = asyncio.get_running_loop()
            while not done.is_set():
                before = loop.time()
                await asyncio.sleep(0.02)
                lag = max(lag, loop.time() - before - 0.02)

        watcher = asyncio.create_task(monitor())
        spin = "while True:\n    pass\n"
        spinners = [asyncio.create_task(box.run(ExecutionRequest(f"s{i}", f"t{i}", spin))) for i in range(5)]
        await asyncio.sleep(0.3)  # let them start spinning first
        good_request = ExecutionRequest("good", "tenant-b", GOOD_STRATEGY, {"tag": "b"}, {})
        good = await box.run(good_request, good_broker)
        outcomes = await asyncio.gather(*spinners)
        done.set()
        await watcher
        return outcomes, good, lag

    outcomes, good, lag = harness.runner.run(scenario())
    assert [outcome.status for outcome in outcomes] == ["timed_out"] * 5
    assert all(outcome.duration > 0.9 for outcome in outcomes)  # they really spun beside the good one
    assert good.status == "succeeded" and good.result == {"sma": 94.5, "price": "64000.5"}
    assert lag < 0.25, f"the supervisor's event loop stalled for {lag:.3f} s"


def test_nul_and_surrogates_cannot_make_the_execution_unrecordable(harness: Harness) -> None:
    outcome = harness.run("print('a\\x00b')\nRESULT = {'k\\x00': 'v\\ud800'}\nraise ValueError('x\\x00y')\n")
    assert outcome.status == "failed"
    recorded = json.dumps([outcome.output, outcome.error, outcome.result], ensure_ascii=False)
    assert "\\u0000" not in recorded and "\x00" not in recorded
    recorded.encode()  # UTF-8 clean: PostgreSQL text and jsonb accept it
    assert outcome.output == "a\ufffdb\n"
    assert "ValueError" in (outcome.error or ""), outcome.error


def test_subclassing_pandas_does_not_shed_the_filter(harness: Harness) -> None:
    code = (
        "class Frame(pd.DataFrame):\n    pass\n\n"
        "frame = Frame({'a': [1]})\nframe.to_pickle('/tmp/owned-subclass.pkl')\n"
    )
    outcome = harness.run(code)
    assert outcome.status == "failed"
    assert "Policy violation" in (outcome.error or "")
    assert 'File "<strategy>", line 5' in (outcome.error or "")
    assert not os.path.exists("/tmp/owned-subclass.pkl")


@pytest.mark.parametrize(
    "code",
    [
        # numpy builds an array from the dict a Series answers for `__array_interface__` if asked.
        "s = pd.Series({'__array_interface__': {'shape': (1,), 'typestr': '<i8', 'data': (4096, True),"
        " 'version': 3}})\na = np.asarray(s)\nRESULT = [str(a.dtype), len(a)]\n",
        "df = pd.DataFrame([[{'shape': (1,), 'typestr': '<i8', 'data': (4096, True), 'version': 3}]],"
        " columns=['__array_interface__'])\na = np.array(df.iloc[0])\nRESULT = [str(a.dtype), len(a)]\n",
    ],
    ids=["series", "row-of-a-frame"],
)
def test_a_label_is_never_an_array_protocol_answer(harness: Harness, code: str) -> None:
    """Reading address 4096 would crash the child: the array must hold the dict itself instead."""
    outcome = harness.run(code)
    assert outcome.status == "succeeded", outcome.error
    assert outcome.result == ["object", 1]


def test_decorators_and_classes_a_strategy_writes_still_work(harness: Harness) -> None:
    code = """
import functools, numbers
def add_one(f):
    @functools.wraps(f)
    def wrapper(*args):
        return f(*args) + 1
    return wrapper
@add_one
def double(x):
    "Twice x."
    return 2 * x
@functools.total_ordering
class Price:
    def __init__(self, value):
        self.value = value
    def __lt__(self, other):
        return self.value < other.value
    def __eq__(self, other):
        return self.value == other.value
class Amount(numbers.Number):
    pass
frame = pd.DataFrame({'a': [1, 1, 2], 'b': [1.0, 2.0, 3.0]})
RESULT = {
    'double': double(3),
    'ordering': Price(1) <= Price(2),
    'number': isinstance(Amount(), numbers.Number),
    'types': [type(1) is int, type(Price(1)) is Price, str(type(frame.values))],
    'mro': len(pd.DataFrame.mro()),
    'agg': frame.groupby('a')['b'].agg(['sum', 'max']).to_dict(),
    'pivot': pd.pivot_table(frame, index='a', values='b', aggfunc='mean').to_dict(),
    'dtype': repr(frame['b'].dtype),
}
"""
    outcome = harness.run(code)
    assert outcome.status == "succeeded", outcome.error
    assert outcome.result == {
        "double": 7,
        "ordering": True,
        "number": True,
        "types": [True, True, "<class 'numpy.ndarray' (sandboxed)>"],
        "mro": 7,
        "agg": {"sum": {"1": 3.0, "2": 3.0}, "max": {"1": 2.0, "2": 3.0}},
        "pivot": {"b": {"1": 1.5, "2": 3.0}},
        "dtype": "dtype('float64')",
    }


def test_every_run_starts_from_fresh_random_state(harness: Harness) -> None:
    """Every child is a fork of one zygote: without a reseed each run drew the same numbers."""
    code = (
        "import random\n"
        "RESULT = [np.random.random(), random.random(), int(pd.Series(range(10**6)).sample(1).iloc[0]),"
        " float(np.random.default_rng().random())]\n"
    )
    first, second = harness.run(code), harness.run(code)
    assert first.status == second.status == "succeeded", (first.error, second.error)
    assert all(a != b for a, b in zip(first.result, second.result, strict=True)), (first.result, second.result)
