"""The run-time half of the language policy: the guard functions RestrictedPython's rewritten code calls.

`reconciler.policy.compile` rewrites `a.b` into `_getattr_(a, "b")`, `a[b]` into `_getitem_(a, b)`, `import m`
into `__import__("m")`, `a.b = c` into `_write_(a).b = c`; this module supplies those functions, the
builtins, and guarded views of modules. The rules, in order of importance:

- nothing whose name starts with `_`, nothing that reflects on frames, code or tracebacks;
- a module is only ever handed out as a `ModuleView`, and only if it is on the allow-list: no path from
  an allowed module (`statistics.sys`, `typing.sys`, `from calendar import sys`) leads to `sys` or `os`;
- pandas and numpy lose their file, network and expression-evaluation surface (`read_*`, `to_pickle`,
  `np.load`, `np.fromfile`, `tofile`, `memmap`, `eval`, `query`, `ctypes`, ...), and the methods that
  can write a file (`to_csv`, `to_json`, ...) only work without a path, returning a string.

This is a layer, not the boundary: the child runs as an unprivileged uid in an empty network namespace
under seccomp, so an escape from these guards still reads no secret and reaches no network.
"""

from __future__ import annotations

import builtins
import functools
import operator
import sys
import types
from collections.abc import Callable, Iterable
from typing import Any

import numpy
from RestrictedPython.Guards import guarded_iter_unpack_sequence, guarded_unpack_sequence

from reconciler.policy.errors import PolicyViolation
from reconciler.policy.lists import (
    ALLOWED_MODULES,
    DENIED_EVERYWHERE,
    DENIED_LIBRARY_NAMES,
    DENIED_LIBRARY_PREFIXES,
    PATH_KEYWORDS,
    PATHLESS,
    REFUSED_BUILTINS,
    SAFE_BUILTIN_NAMES,
    STRING_DISPATCH,
    VIEW_ALLOWED_NAMES,
    VIEW_DENIED_NAMES,
    VIEWABLE_SUBMODULES,
)

STRATEGY_MODULE = "strategy"  # `__name__` of the strategy's globals, so `__module__` of its classes


def _deny(message: str) -> PolicyViolation:
    return PolicyViolation(message)


def _is_library_object(obj: object) -> bool:
    """Whether `obj` is a pandas or numpy class or instance (its surface is filtered by name).

    The whole MRO counts: a strategy's `class Frame(pd.DataFrame)` must not shed the filter.
    """
    kind = obj if isinstance(obj, type) else type(obj)
    for cls in kind.__mro__:
        module = getattr(cls, "__module__", None)
        if isinstance(module, str) and module.partition(".")[0] in ("pandas", "numpy"):
            return True
    return False


def _library_name_denied(name: str) -> bool:
    return name in DENIED_LIBRARY_NAMES or name.startswith(DENIED_LIBRARY_PREFIXES)


class ModuleView:
    """A read-only stand-in for a module: every attribute read is vetted, nothing can be assigned.

    Its only state lives in name-mangled slots, which no strategy can name (names starting with `_` are
    refused both when the code is compiled and by `guarded_getattr` at run time).
    """

    __slots__ = ("__allowed", "__denied", "__library", "__module")

    def __init__(self, module: types.ModuleType) -> None:
        name = module.__name__
        object.__setattr__(self, "_ModuleView__module", module)
        object.__setattr__(self, "_ModuleView__allowed", VIEW_ALLOWED_NAMES.get(name))
        object.__setattr__(self, "_ModuleView__denied", VIEW_DENIED_NAMES.get(name, frozenset()))
        object.__setattr__(self, "_ModuleView__library", name.partition(".")[0] in ("pandas", "numpy"))

    def __getattr__(self, name: str) -> Any:
        module = self.__module
        where = f"{module.__name__}.{name}"
        if name.startswith("_") or name in DENIED_EVERYWHERE:
            raise _deny(f"{where} is not available to strategies")
        if self.__allowed is not None and name not in self.__allowed:
            raise _deny(f"{where} is not available to strategies")
        if name in self.__denied or (self.__library and _library_name_denied(name)):
            raise _deny(f"{where} is not available to strategies (no file, network or eval access)")
        return _vet(getattr(module, name), name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise _deny(f"cannot assign to module {self.__module.__name__}")

    def __delattr__(self, name: str) -> None:
        raise _deny(f"cannot delete from module {self.__module.__name__}")

    def __repr__(self) -> str:
        return f"<module {self.__module.__name__!r} (sandboxed)>"


_views: dict[str, ModuleView] = {}


def module_view(module: types.ModuleType) -> ModuleView:
    view = _views.get(module.__name__)
    if view is None:
        view = _views[module.__name__] = ModuleView(module)
    return view


class _GuardedArrayClass(type):
    """Stand-in for `np.ndarray` / `np.recarray`: isinstance checks and plain construction work, but
    not construction over a raw buffer, which with an object dtype forges object pointers from bytes
    (`np.ndarray((1,), object, buffer=...)`), a memory-corruption primitive."""

    _real: type

    def __instancecheck__(cls, instance: Any) -> bool:
        return isinstance(instance, cls._real)

    def __subclasscheck__(cls, subclass: type) -> bool:
        return issubclass(subclass, cls._real)

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if len(args) > 2 or set(kwargs) & {"buffer", "buf", "offset", "strides"}:
            raise _deny(f"numpy.{cls._real.__name__}() over a raw buffer is not available to strategies")
        return cls._real(*args, **kwargs)

    def __getattr__(cls, name: str) -> Any:
        return guarded_getattr(cls._real, name)

    def __repr__(cls) -> str:
        return f"<class 'numpy.{cls._real.__name__}' (sandboxed)>"


_GUARDED_CLASSES: dict[type, type] = {
    real: _GuardedArrayClass(real.__name__, (), {"_real": real, "__module__": "numpy"})
    for real in (numpy.ndarray, numpy.recarray)
}


def _vet(value: Any, name: str = "") -> Any:
    """Every value read through a guard passes here: modules become views, or are refused."""
    if type(value) is type and value in _GUARDED_CLASSES:
        return _GUARDED_CLASSES[value]
    if isinstance(value, types.ModuleType):
        if value.__name__ in ALLOWED_MODULES or value.__name__ in VIEWABLE_SUBMODULES:
            return module_view(value)
        raise _deny(f"module {value.__name__!r} is not available to strategies")
    return value


def _check_dispatch_strings(value: Any, depth: int = 0) -> None:
    if isinstance(value, str):
        if value.startswith("_") or _library_name_denied(value) or value in PATHLESS:
            raise _deny(f"{value!r} cannot be used as a function name in strategies")
    elif depth < 3 and isinstance(value, (list, tuple, dict)):
        for item in value.values() if isinstance(value, dict) else value:
            _check_dispatch_strings(item, depth + 1)


def _string_dispatch_guard(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        for arg in args:
            _check_dispatch_strings(arg)
        for arg in kwargs.values():
            _check_dispatch_strings(arg)
        return method(*args, **kwargs)

    return guarded


def _pathless_guard(method: Callable[..., Any], name: str) -> Callable[..., Any]:
    @functools.wraps(method)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if args or any(kwargs.get(key) is not None for key in PATH_KEYWORDS):
            raise _deny(f"{name}() cannot write files in strategies; call it without a path to get a string")
        return method(**kwargs)

    return guarded


def _check_attribute_name(obj: object, name: str) -> None:
    if type(name) is not str:
        raise TypeError("attribute name must be a string")
    if name.startswith("_"):
        raise _deny(f'"{name}" is an invalid attribute name because it starts with "_"')
    if name in DENIED_EVERYWHERE:
        raise _deny(f'"{name}" is a restricted name that strategies cannot access')
    # str.format / format_map read attributes of their arguments ("{0.__class__}".format(x)).
    if name in ("format", "format_map") and (isinstance(obj, str) or (isinstance(obj, type) and issubclass(obj, str))):
        raise _deny("str.format() and str.format_map() are not allowed; use f-strings or %")


def guarded_getattr(obj: Any, name: str, *default: Any) -> Any:
    _check_attribute_name(obj, name)
    if type(obj) is ModuleView:
        return getattr(obj, name, *default)
    if _is_library_object(obj):
        if _library_name_denied(name):
            raise _deny(f"{name} is not available to strategies (no file, network or eval access)")
        value = getattr(obj, name, *default)
        if name in PATHLESS or name in STRING_DISPATCH:
            if isinstance(obj, type):
                raise _deny(f"call {name}() on an object, not on its class")
            if callable(value):
                return _pathless_guard(value, name) if name in PATHLESS else _string_dispatch_guard(value)
        return _vet(value, name)
    return _vet(getattr(obj, name, *default), name)


def guarded_hasattr(obj: Any, name: str) -> bool:
    try:
        guarded_getattr(obj, name)
    except (AttributeError, PolicyViolation):
        return False
    return True


def guarded_getitem(obj: Any, key: Any) -> Any:
    return _vet(obj[key])


class _ReadOnly:
    """What `_write_` returns for objects a strategy may not modify (modules, classes, functions...)."""

    __slots__ = ("__what",)
    __what: str

    def __init__(self, obj: object) -> None:
        object.__setattr__(self, "_ReadOnly__what", type(obj).__name__)

    def _refuse(self, *args: Any) -> None:
        raise _deny(f"strategies cannot modify {self.__what} objects")

    __setitem__ = __delitem__ = __setattr__ = __delattr__ = _refuse


_PLAIN_WRITABLE = frozenset({dict, list, set, bytearray})


def guarded_write(obj: Any) -> Any:
    """Writes are allowed to plain containers, pandas/numpy data and the strategy's own objects."""
    kind = type(obj)
    if kind in _PLAIN_WRITABLE:
        return obj
    if isinstance(obj, type):
        return obj if obj.__module__ == STRATEGY_MODULE else _ReadOnly(obj)
    if isinstance(obj, (types.ModuleType, ModuleView, types.FunctionType, types.BuiltinFunctionType)):
        return _ReadOnly(obj)
    if kind.__module__ == STRATEGY_MODULE or _is_library_object(obj):
        return obj
    return _ReadOnly(obj)


def guarded_setattr(obj: Any, name: str, value: Any) -> None:
    _check_attribute_name(obj, name)
    setattr(guarded_write(obj), name, value)


def guarded_delattr(obj: Any, name: str) -> None:
    _check_attribute_name(obj, name)
    delattr(guarded_write(obj), name)


_INPLACE: dict[str, Callable[[Any, Any], Any]] = {
    "+=": operator.iadd,
    "-=": operator.isub,
    "*=": operator.imul,
    "/=": operator.itruediv,
    "//=": operator.ifloordiv,
    "%=": operator.imod,
    "**=": operator.ipow,
    "<<=": operator.ilshift,
    ">>=": operator.irshift,
    "|=": operator.ior,
    "^=": operator.ixor,
    "&=": operator.iand,
    "@=": operator.imatmul,
}


def guarded_inplacevar(op: str, target: Any, value: Any) -> Any:
    return _INPLACE[op](target, value)


# Modules that C code imports on a strategy's behalf through the `__import__` of the calling frame,
# which is this guard (`datetime.strptime` imports `_strptime`). A strategy itself cannot ask for them:
# its import statements are checked against ALLOWED_MODULES at compile time, and it has no way to name
# `__import__`. They are preloaded by the zygote, so this is a lookup, never a file read.
LIBRARY_IMPORTS = frozenset({"_strptime"})


def guarded_import(
    name: str, globals: Any = None, locals: Any = None, fromlist: Iterable[str] | None = (), level: int = 0
) -> Any:
    if level == 0 and name in LIBRARY_IMPORTS and name in sys.modules:
        return sys.modules[name]
    if level != 0 or name not in ALLOWED_MODULES:
        raise _deny(f"import of module {name!r} is not allowed")
    module = __import__(name)  # already imported by the zygote: a dictionary lookup
    if fromlist or "." not in name:
        for part in name.split(".")[1:]:
            module = getattr(module, part)
        return module_view(module)
    return module_view(__import__(name.partition(".")[0]))


def _one_argument_type(obj: Any) -> type:
    return _vet(type(obj))


def _apply(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return func(*args, **kwargs)


def _exception_names() -> list[str]:
    return [
        name
        for name, value in vars(builtins).items()
        if isinstance(value, type) and issubclass(value, BaseException) and not name.startswith("_")
    ]


def _refuser(message: str) -> Callable[..., Any]:
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise _deny(message)

    return refused


def make_builtins() -> dict[str, Any]:
    """The builtins a strategy sees, including the guard functions RestrictedPython's code calls."""
    table: dict[str, Any] = {name: _refuser(message) for name, message in REFUSED_BUILTINS.items()}
    table.update({name: getattr(builtins, name) for name in SAFE_BUILTIN_NAMES})
    table.update({name: getattr(builtins, name) for name in _exception_names()})
    table.update(
        {
            "__build_class__": builtins.__build_class__,
            "__import__": guarded_import,
            "__metaclass__": type,
            "type": _one_argument_type,
            "getattr": guarded_getattr,
            "hasattr": guarded_hasattr,
            "setattr": guarded_setattr,
            "delattr": guarded_delattr,
            "PolicyViolation": PolicyViolation,
            "_getattr_": guarded_getattr,
            "_getitem_": guarded_getitem,
            "_getiter_": iter,
            "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
            "_unpack_sequence_": guarded_unpack_sequence,
            "_write_": guarded_write,
            "_inplacevar_": guarded_inplacevar,
            "_apply_": _apply,
        }
    )
    return table


def harden_libraries() -> None:
    """Remove pandas' expression evaluator at its source, in the zygote, once.

    `pd.eval`, `DataFrame.eval` and `DataFrame.query` run an expression language with attribute access
    and calls of its own, and read the caller's frames for `@name`: a way around every guard above.
    String dispatch (`df.agg("eval", ...)`) can reach them without `_getattr_`, so the guard on names
    is not enough: the functions themselves are replaced by ones that refuse.
    """
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
