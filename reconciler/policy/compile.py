"""The compile-time half of the language policy: source text to a checked code object.

Pure (no I/O): the API calls it at deploy time to answer a 422 with line and column, and the replica
compiles every strategy through `compile_strategy` before any code runs. RestrictedPython rewrites
attribute, item and iteration access into calls of guard functions (supplied at run time by
`reconciler.policy.guards`) and rejects names starting with `_`; this module adds structured
positions and the allow-list of modules.
"""

from __future__ import annotations

import ast
import types

from RestrictedPython import RestrictingNodeTransformer

from reconciler.policy.errors import PolicyError
from reconciler.policy.lists import ALLOWED_MODULES, REFUSED_BUILTINS

STRATEGY_FILENAME = "<strategy>"


class _PositionedTransformer(RestrictingNodeTransformer):
    """RestrictedPython's transformer, keeping (line, column, message) instead of a formatted string."""

    def __init__(self) -> None:
        super().__init__()
        self.positioned: list[tuple[tuple[int, int, int, int], int | None, int | None, str]] = []

    def error(self, node: ast.AST, info: str) -> None:
        super().error(node, info)
        line, column = getattr(node, "lineno", None), getattr(node, "col_offset", None)
        # Sort key: where the problem starts, then where it ends, so that in `().__class__.__base__`
        # the innermost (first written) attribute is reported, not the outermost node visited first.
        end = (getattr(node, "end_lineno", 0) or 0, getattr(node, "end_col_offset", 0) or 0)
        key = (line or 0, column or 0, *end)
        self.positioned.append((key, line, column, info))

    # Annotations written as strings are evaluated later by `typing.get_type_hints` and friends with a
    # plain `eval`, outside every guard; annotations are documentation in a strategy, so strings are
    # refused wherever an annotation can appear (RestrictedPython already refuses `x: T = v`).
    def _check_annotation(self, annotation: ast.AST | None) -> None:
        if annotation is None:
            return
        for node in ast.walk(annotation):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                self.error(node, "string annotations are not allowed")
                return

    def visit_arg(self, node: ast.arg) -> ast.AST:
        self._check_annotation(node.annotation)
        return super().visit_arg(node)  # type: ignore[return-value]

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        self._check_annotation(node.returns)
        return super().visit_FunctionDef(node)  # type: ignore[return-value]

    def visit_Import(self, node: ast.Import) -> ast.AST:
        for alias in node.names:
            self._check_module(node, alias.name)
        return super().visit_Import(node)  # type: ignore[return-value]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST:
        if node.level:
            self.error(node, "relative imports are not allowed")
        else:
            self._check_module(node, node.module or "")
        return super().visit_ImportFrom(node)  # type: ignore[return-value]

    def _check_module(self, node: ast.AST, name: str) -> None:
        if name not in ALLOWED_MODULES:
            allowed = ", ".join(sorted(ALLOWED_MODULES))
            self.error(node, f"import of module {name!r} is not allowed (allowed: {allowed})")


def _bound_names(tree: ast.AST) -> set[str]:
    """Every name the code binds anywhere (assignment, def, class, parameter, import, except, match)."""
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).partition(".")[0])
        elif isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and node.name:
            bound.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            bound.add(node.rest)
    return bound


def _check_refused_builtins(tree: ast.AST, transformer: _PositionedTransformer) -> None:
    """`open(...)`, `vars(...)`, `exit()`...: refused now, with line and column, rather than at run time
    (where the builtin raises the same message), unless the strategy defines that name itself."""
    used = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in REFUSED_BUILTINS
    ]
    if not used:
        return
    bound = _bound_names(tree)
    for node in used:
        if node.id not in bound:
            transformer.error(node, REFUSED_BUILTINS[node.id])


def _transform(code: str) -> ast.Module:
    try:
        tree = ast.parse(code, filename=STRATEGY_FILENAME, mode="exec")
    except SyntaxError as exc:
        column = (exc.offset - 1) if exc.offset else None
        raise PolicyError(f"SyntaxError: {exc.msg}", exc.lineno, column) from None
    except (ValueError, MemoryError, RecursionError) as exc:  # NUL bytes, absurd nesting
        raise PolicyError(f"the code cannot be parsed: {exc}") from None
    transformer = _PositionedTransformer()
    try:
        _check_refused_builtins(tree, transformer)
        tree = transformer.visit(tree)
    except RecursionError:
        raise PolicyError("the code is nested too deeply") from None
    if transformer.positioned:
        _key, line, column, message = min(transformer.positioned, key=lambda item: item[0])
        extra = len(transformer.positioned) - 1
        if extra:
            message += f" (and {extra} more problem{'s' if extra > 1 else ''})"
        raise PolicyError(message, line, column)
    return tree


def check_code(code: str) -> None:
    """Raise PolicyError (with line and column) if `code` does not compile or breaks the policy.

    Compiles fully: some errors (`return` outside a function) only appear at compilation.
    """
    compile_strategy(code)


def compile_strategy(code: str) -> types.CodeType:
    """Compile `code` under the policy into a code object whose filename is `<strategy>`."""
    tree = _transform(code)
    try:
        return compile(tree, STRATEGY_FILENAME, "exec")
    except SyntaxError as exc:
        column = (exc.offset - 1) if exc.offset else None
        raise PolicyError(f"SyntaxError: {exc.msg}", exc.lineno, column) from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise PolicyError(f"the code cannot be compiled: {exc}") from None
