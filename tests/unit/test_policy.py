"""The language policy, as the API uses it at deploy time (pure, no processes)."""

from __future__ import annotations

import pytest

from reconciler.policy import ALLOWED_MODULES, STRATEGY_FILENAME, PolicyError, check_code, compile_strategy

TYPICAL = """
import math
from collections import deque

df = pd.DataFrame({"close": CONFIG.get("closes", [1.0, 2.0])})
sma = df["close"].rolling(2).mean()
for index, value in enumerate(sma):
    print(index, value)
STATE["last"] = float(df["close"].iloc[-1])
RESULT = {"sma": [v for v in sma if v == v], "sqrt": math.sqrt(4)}
"""


def test_typical_strategy_passes_and_compiles_with_strategy_filename() -> None:
    check_code(TYPICAL)
    code = compile_strategy(TYPICAL)
    assert code.co_filename == STRATEGY_FILENAME


@pytest.mark.parametrize(
    ("code", "line", "column", "fragment"),
    [
        ("x = 1\ny = (\n", 2, 4, "SyntaxError"),
        ("x = 1\n  y = 2\n", 2, 1, "unexpected indent"),
        ("import os\n", 1, 0, "'os' is not allowed"),
        ("x = 1\nfrom subprocess import run\n", 2, 0, "'subprocess' is not allowed"),
        ("from . import sibling\n", 1, 0, "relative imports"),
        ("_hidden = 1\n", 1, 0, 'starts with "_"'),
        ("x = 1\nprint(x.__class__)\n", 2, 6, '"__class__"'),
        ("x = ().__class__.__base__.__subclasses__()\n", 1, 4, '"__class__"'),
        ("def g():\n    yield 1\nf = g().gi_frame\n", 3, 4, "gi_frame"),
        ("eval('1')\n", 1, 0, "Eval calls are not allowed"),
        ("exec('x = 1')\n", 1, 0, "Exec calls are not allowed"),
        ("async def f():\n    pass\n", 1, 0, "AsyncFunctionDef"),
        ("x = 1\n\n\nclass A(metaclass=type):\n    pass\n", 4, 0, "metaclass"),
        ("def f(_secret):\n    return 1\n", 1, 0, 'starts with "_"'),
        ("x = 1\nreturn x\n", 2, 0, "'return' outside function"),
    ],
)
def test_violations_carry_line_and_column(code: str, line: int | None, column: int | None, fragment: str) -> None:
    with pytest.raises(PolicyError) as caught:
        check_code(code)
    error = caught.value
    assert fragment in error.message
    if line is not None:
        assert (error.line, error.column) == (line, column)
        assert str(error).startswith(f"line {line}, column {column}: ")
    with pytest.raises(PolicyError):
        compile_strategy(code)


def test_several_problems_report_the_first_and_count_the_rest() -> None:
    with pytest.raises(PolicyError) as caught:
        check_code("import os\nimport sys\nx._y = 1\n")
    assert caught.value.line == 1
    assert "(and 2 more problems)" in caught.value.message


def test_allowed_modules_cover_what_strategies_need_and_nothing_that_reaches_the_system() -> None:
    for name in (
        "math",
        "statistics",
        "datetime",
        "json",
        "time",
        "random",
        "collections",
        "itertools",
        "functools",
        "decimal",
        "re",
        "typing",
        "pandas",
        "numpy",
    ):
        assert name in ALLOWED_MODULES
    for name in (
        "os",
        "sys",
        "subprocess",
        "socket",
        "ctypes",
        "io",
        "pathlib",
        "importlib",
        "pickle",
        "inspect",
        "gc",
        "operator",
        "builtins",
        "shutil",
        "urllib",
        "http",
        "threading",
        "multiprocessing",
        "signal",
        "resource",
        "marshal",
        "types",
        "code",
        "codecs",
    ):
        assert name not in ALLOWED_MODULES
    for name in sorted(ALLOWED_MODULES):
        check_code(f"import {name}\n")


def test_nul_bytes_and_absurd_nesting_are_policy_errors_not_crashes() -> None:
    with pytest.raises(PolicyError):
        check_code("x = 1\x00\n")
    with pytest.raises(PolicyError):
        check_code("x = " + "(" * 5000 + "1" + ")" * 5000 + "\n")


@pytest.mark.parametrize(
    ("code", "line", "column", "fragment"),
    [
        ("data = open('/etc/passwd').read()\n", 1, 7, "open() is not available"),
        ("x = 1\nfor v in vars():\n    pass\n", 2, 9, "vars() is not available"),
        ("exit()\n", 1, 0, "exit() is not available"),
    ],
)
def test_refused_builtins_are_refused_at_deploy_with_position(code: str, line: int, column: int, fragment: str) -> None:
    with pytest.raises(PolicyError) as caught:
        check_code(code)
    assert (caught.value.line, caught.value.column) == (line, column)
    assert fragment in caught.value.message


def test_a_name_the_strategy_defines_itself_is_not_a_refused_builtin() -> None:
    check_code("def open(path):\n    return path\nRESULT = open('x')\n")
    check_code("dir = 'up'\nRESULT = dir\n")
    check_code("for input in [1, 2]:\n    RESULT = input\n")
