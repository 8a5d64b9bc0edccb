"""The deploy-time code check, until `reconciler.policy.check_code` is merged.

`compile_check` only compiles (a syntax check); the real check also applies the language policy.
Both raise an exception carrying `.message`, `.line` (1-based) and `.column` (0-based, as in `ast`);
the API recognises a refusal by that shape (`CodeRejection`), so swapping the default in
`api.app.create_app` is a one-line change.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class CodeRejection(Protocol):
    message: str
    line: int | None
    column: int | None


class PolicyError(Exception):
    """Same shape as `reconciler.policy.PolicyError`: `line` 1-based, `column` 0-based."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


def compile_check(code: str) -> None:
    try:
        compile(code, "<strategy>", "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise PolicyError(f"SyntaxError: {exc.msg}", exc.lineno, exc.offset - 1 if exc.offset else None) from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise PolicyError(f"code cannot be compiled: {type(exc).__name__}: {exc}") from None
