"""The language policy's changes to pandas itself, made once in the zygote before any strategy runs.

The guard functions only see what strategy code does directly. Some of pandas' own code does, on a
strategy's behalf, what a guard would refuse: it evaluates expression strings, looks a method up by a
name the strategy passed (`df.agg("name")`, from a list, an array, a `NamedAgg`, `pd.pivot_table`'s
`aggfunc`...), and answers attribute reads with column values (`series.__array_interface__` is the
item labelled so, and numpy trusts that dict to build an array over any address). Those paths are
closed here, where pandas does them, so every route to them is covered.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from reconciler.policy.errors import PolicyViolation

NameDenied = Callable[[str], bool]


def harden(name_denied: NameDenied) -> None:
    _remove_eval()
    _no_private_labels()
    _check_string_dispatch(name_denied)


def _remove_eval() -> None:
    """`pd.eval`, `DataFrame.eval` and `DataFrame.query` run an expression language with attribute
    access and calls of its own, and read the caller's frames for `@name`: replaced by refusals."""
    import pandas
    import pandas.core.computation.api as computation_api
    import pandas.core.computation.eval as computation_eval

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PolicyViolation("pandas eval() and query() are not available to strategies")

    computation_eval.eval = refuse  # type: ignore[assignment]
    computation_api.eval = refuse  # type: ignore[assignment]
    pandas.eval = refuse  # type: ignore[attr-defined]
    pandas.DataFrame.eval = refuse  # type: ignore[method-assign, assignment]
    pandas.DataFrame.query = refuse  # type: ignore[method-assign, assignment]


def _no_private_labels() -> None:
    """Attribute reads of names starting with `_` never answer with a column, row or group.

    pandas serves `obj.name` from labels when nothing else has that name; numpy and the standard
    library read protocol attributes (`__array_interface__`, `__deepcopy__`, ...) from instances, so
    a label with such a name was a forged protocol answer.
    """
    from pandas.core.generic import NDFrame
    from pandas.core.groupby.groupby import GroupBy
    from pandas.core.resample import Resampler
    from pandas.core.window.rolling import BaseWindow

    classes: list[type] = [NDFrame, GroupBy, Resampler, BaseWindow]
    try:
        from pandas.core.col import Expression  # pandas >= 3: `pd.col("a").name` builds a deferred read

        classes.append(Expression)
    except ImportError:  # pragma: no cover - older pandas
        pass
    for cls in classes:
        original = cls.__dict__["__getattr__"]

        def __getattr__(self: Any, name: str, /, _original: Any = original) -> Any:
            if name.startswith("_"):
                return object.__getattribute__(self, name)
            return _original(self, name)

        cls.__getattr__ = __getattr__  # type: ignore[attr-defined]


def _check_string_dispatch(name_denied: NameDenied) -> None:
    """Where pandas turns a string into a method call, the name passes the policy first."""
    from pandas.core.apply import Apply
    from pandas.core.groupby.generic import DataFrameGroupBy, SeriesGroupBy
    from pandas.core.groupby.groupby import GroupBy

    def check(func: Any) -> None:
        if isinstance(func, str) and name_denied(func):
            raise PolicyViolation(f"{func!r} cannot be used as a function name in strategies")

    apply_str = Apply._apply_str

    @functools.wraps(apply_str)
    def _apply_str(self: Any, obj: Any, func: Any, *args: Any, **kwargs: Any) -> Any:
        check(func)
        return apply_str(self, obj, func, *args, **kwargs)

    Apply._apply_str = _apply_str  # type: ignore[method-assign]

    def checking_first_argument(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def checked(self: Any, func: Any = None, *args: Any, **kwargs: Any) -> Any:
            check(func)
            return method(self, func, *args, **kwargs)

        return checked

    # These look `getattr(self, func)` up inline, not through Apply.
    for cls, names in ((GroupBy, ("apply",)), (SeriesGroupBy, ("aggregate", "agg", "apply"))):
        for name in names:
            if name in cls.__dict__:
                setattr(cls, name, checking_first_argument(cls.__dict__[name]))
    for name in ("aggregate", "agg"):
        if name in DataFrameGroupBy.__dict__:
            setattr(DataFrameGroupBy, name, checking_first_argument(DataFrameGroupBy.__dict__[name]))
