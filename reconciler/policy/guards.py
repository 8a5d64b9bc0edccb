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
import collections
import collections.abc
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


# The real `__mro__` and `__module__` of a class, read through `type`'s own descriptors: a metaclass
# can define `__mro__` or `__module__` of its own to make a pandas subclass look like plain code.
_real_mro: Callable[[type], tuple[type, ...]] = type.__dict__["__mro__"].__get__
_real_module: Callable[[type], Any] = type.__dict__["__module__"].__get__
LIBRARY_PACKAGES = ("pandas", "numpy")


def class_module(cls: type) -> str | None:
    """The module a class was defined in, as `type` records it (never a metaclass's override)."""
    try:
        module = _real_module(cls)
    except (AttributeError, TypeError):
        return None
    return module if isinstance(module, str) else None


def _is_library_object(obj: object) -> bool:
    """Whether `obj` is a pandas or numpy class or instance (its surface is filtered by name).

    The whole MRO counts: a strategy's `class Frame(pd.DataFrame)` must not shed the filter. The MRO
    is the one attribute lookup really walks, read past any metaclass; a class whose metaclass the
    strategy wrote is filtered too (strategies cannot reach a metaclass, but this does not rely on it).
    """
    kind = obj if isinstance(obj, type) else type(obj)
    for cls in _real_mro(kind):
        module = class_module(cls)
        if module is not None and module.partition(".")[0] in LIBRARY_PACKAGES:
            return True
    return class_module(type(kind)) == STRATEGY_MODULE


def is_strategy_class(cls: type) -> bool:
    return isinstance(cls, type) and class_module(cls) == STRATEGY_MODULE and not _is_library_object(cls)


def is_strategy_function(func: object) -> bool:
    """A function the strategy defined (its globals are the strategy's namespace)."""
    return isinstance(func, types.FunctionType) and func.__globals__.get("__name__") == STRATEGY_MODULE


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
        object.__setattr__(self, "_ModuleView__library", name.partition(".")[0] in LIBRARY_PACKAGES)

    def __getattr__(self, name: str) -> Any:
        module = self.__module
        where = f"{module.__name__}.{name}"
        if name.startswith("_") or name in DENIED_EVERYWHERE:
            raise _deny(f"{where} is not available to strategies")
        if self.__allowed is not None and name not in self.__allowed:
            raise _deny(f"{where} is not available to strategies")
        if name in self.__denied:
            raise _deny(f"{where} is not available to strategies")
        if self.__library and _library_name_denied(name):
            raise _deny(f"{where} is not available to strategies (no file, network or eval access)")
        substitute = SUBSTITUTES.get((module.__name__, name))
        if substitute is not None:
            return substitute
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
        if name.startswith("_"):
            # numpy itself probes classes for protocol names (`__numpy_dtype__`): a plain miss, not a
            # violation. A strategy never gets here with such a name (`guarded_getattr` refuses it).
            raise AttributeError(name)
        return guarded_getattr(cls._real, name)

    def __repr__(cls) -> str:
        return f"<class 'numpy.{cls._real.__name__}' (sandboxed)>"


_GUARDED_CLASSES: dict[type, type] = {
    real: _GuardedArrayClass(real.__name__, (), {"_real": real, "__module__": "numpy"})
    for real in (numpy.ndarray, numpy.recarray)
}


def _vet(value: Any, name: str = "") -> Any:
    """Every value read through a guard passes here: modules become views, or are refused; so are
    metaclasses, whose three-argument call builds a class from a dict of any names (dunders included:
    `__array_interface__` forges an array over any address), and whose subclass can lie about its MRO."""
    if type(value) is type and value in _GUARDED_CLASSES:
        return _GUARDED_CLASSES[value]
    if isinstance(value, types.ModuleType):
        if value.__name__ in ALLOWED_MODULES or value.__name__ in VIEWABLE_SUBMODULES:
            return module_view(value)
        raise _deny(f"module {value.__name__!r} is not available to strategies")
    if isinstance(value, type) and issubclass(value, type):
        shown = f"{class_module(value)}.{value.__name__}"
        raise _deny(f"metaclasses ({shown}) are not available to strategies; use class statements")
    return value


def dispatch_name_denied(name: str) -> bool:
    """Whether a library may not look `name` up as a method for a strategy (`df.agg("name")`)."""
    return name.startswith("_") or _library_name_denied(name) or name in PATHLESS


def check_dispatch_strings(value: Any, depth: int = 0) -> None:
    """Refuse method names a library would look up by string, wherever the arguments hold them.

    pandas reads a name out of any list-like (list, tuple, dict, set, an array, a Series...) and out
    of `NamedAgg`; this walks all of them. Iterators are refused: checking would consume them.
    """
    if isinstance(value, str):
        if dispatch_name_denied(value):
            raise _deny(f"{value!r} cannot be used as a function name in strategies")
        return
    if depth >= 4 or value is None or isinstance(value, (bytes, bytearray, int, float, complex, bool)):
        return
    if isinstance(value, dict):
        items: Iterable[Any] = [*value.keys(), *value.values()]
    elif isinstance(value, (list, tuple, set, frozenset, collections.deque)):
        items = value
    elif isinstance(value, numpy.ndarray) or (_is_library_object(value) and hasattr(value, "dtype")):
        # Only arrays that can hold strings are walked: a float column is never a list of names.
        if getattr(value, "dtype", None) is None or getattr(value.dtype, "kind", "O") not in "OUSTV":
            return
        items = list(numpy.asarray(value, dtype=object).ravel())
    elif _is_library_object(value) and hasattr(value, "aggfunc"):  # pd.NamedAgg(column, aggfunc)
        items = [value.aggfunc]
    elif isinstance(value, collections.abc.Iterator):
        raise _deny("pass function names to pandas as a list, not as an iterator")
    else:
        return
    for item in items:
        check_dispatch_strings(item, depth + 1)


def _string_dispatch_guard(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        for arg in args:
            check_dispatch_strings(arg)
        for arg in kwargs.values():
            check_dispatch_strings(arg)
        return method(*args, **kwargs)

    return guarded


def _checked_resize(method: Callable[..., Any]) -> Callable[..., Any]:
    """`ndarray.resize(..., refcheck=False)` frees memory other arrays still view: a use-after-free."""

    @functools.wraps(method)
    def resize(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("refcheck", True) is not True:
            raise _deny("ndarray.resize(refcheck=False) is not available to strategies; use np.resize(a, shape)")
        return method(*args, **kwargs)

    return resize


def _vetted_mro(method: Callable[..., Any]) -> Callable[..., Any]:
    """`cls.mro()` lists base classes: vetted like any other read (np.matrix.mro() holds the real ndarray)."""

    @functools.wraps(method)
    def mro(*args: Any, **kwargs: Any) -> list[Any]:
        return [_vet(cls) for cls in method(*args, **kwargs)]

    return mro


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
    # str.format / format_map read attributes of their arguments ("{0.__class__}".format(x)), and
    # collections.UserString forwards both to str.
    if name in ("format", "format_map") and (
        isinstance(obj, _FORMATTING) or (isinstance(obj, type) and issubclass(obj, _FORMATTING))
    ):
        raise _deny("str.format() and str.format_map() are not allowed; use f-strings or %")


_FORMATTING = (str, collections.UserString)


def guarded_getattr(obj: Any, name: str, *default: Any) -> Any:
    _check_attribute_name(obj, name)
    if type(obj) is ModuleView:
        return getattr(obj, name, *default)
    if name == "mro":
        value = getattr(obj, name, *default)
        return _vetted_mro(value) if callable(value) else _vet(value)
    if name == "resize" and (
        isinstance(obj, numpy.ndarray) or (isinstance(obj, type) and issubclass(obj, numpy.ndarray))
    ):
        return _checked_resize(getattr(obj, name, *default))
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
        return obj if is_strategy_class(obj) else _ReadOnly(obj)
    if isinstance(obj, (types.ModuleType, ModuleView, types.FunctionType, types.BuiltinFunctionType)):
        return _ReadOnly(obj)
    if class_module(kind) == STRATEGY_MODULE or _is_library_object(obj):
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
# which is this guard (`datetime.strptime` imports `_strptime`; numpy imports `numpy._core._internal`
# and `numpy._core._dtype` to describe or view arrays). A strategy itself cannot ask for them: its
# import statements are checked against ALLOWED_MODULES at compile time, and it has no way to name
# `__import__`. They are loaded by the zygote, so this is a lookup, never a file read, and C code
# takes the module from `sys.modules`, never from what `__import__` returns.
LIBRARY_IMPORTS = frozenset({"_strptime"})


def _library_import(name: str) -> bool:
    return name in LIBRARY_IMPORTS or name.partition(".")[0] in LIBRARY_PACKAGES


def guarded_import(
    name: str, globals: Any = None, locals: Any = None, fromlist: Iterable[str] | None = (), level: int = 0
) -> Any:
    if level == 0 and name not in ALLOWED_MODULES and _library_import(name) and name in sys.modules:
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
    kind = type(obj)
    if issubclass(kind, type):
        raise _deny("type() of a class is not available to strategies (it is the class's metaclass)")
    return _vet(kind)


# -- helpers of allowed modules that read or write attributes by a name the caller chooses ---------------
# `functools.update_wrapper(f, g, assigned, updated)` does `setattr(f, name, getattr(g, name))` for names
# of its caller's choosing (`updated=("__globals__",)` copied a library function's globals, `sys`
# included, into the strategy's); these stand-ins allow what decorators need and nothing more.


def _check_wrapper_names(assigned: Iterable[str], updated: Iterable[str]) -> tuple[tuple[str, ...], ...]:
    assigned, updated = tuple(assigned), tuple(updated)
    if not set(assigned) <= set(functools.WRAPPER_ASSIGNMENTS) or not set(updated) <= set(functools.WRAPPER_UPDATES):
        raise _deny("functools.update_wrapper() and wraps() copy only the standard attributes in strategies")
    return assigned, updated


def guarded_update_wrapper(
    wrapper: Any,
    wrapped: Any,
    assigned: Iterable[str] = functools.WRAPPER_ASSIGNMENTS,
    updated: Iterable[str] = functools.WRAPPER_UPDATES,
) -> Any:
    assigned, updated = _check_wrapper_names(assigned, updated)
    if not (is_strategy_function(wrapper) or is_strategy_class(wrapper) or is_strategy_class(type(wrapper))):
        raise _deny("functools.update_wrapper() can only update the strategy's own functions and classes")
    return functools.update_wrapper(wrapper, wrapped, assigned, updated)


def guarded_wraps(
    wrapped: Any,
    assigned: Iterable[str] = functools.WRAPPER_ASSIGNMENTS,
    updated: Iterable[str] = functools.WRAPPER_UPDATES,
) -> Callable[[Any], Any]:
    assigned, updated = _check_wrapper_names(assigned, updated)
    return functools.partial(guarded_update_wrapper, wrapped=wrapped, assigned=assigned, updated=updated)


def guarded_total_ordering(cls: Any) -> Any:
    """`functools.total_ordering` sets methods on the class it is given: only on the strategy's own."""
    if not is_strategy_class(cls):
        raise _deny("functools.total_ordering() can only decorate the strategy's own classes")
    return functools.total_ordering(cls)


# (module, name) -> what a strategy gets instead of the module's own attribute.
SUBSTITUTES: dict[tuple[str, str], Any] = {
    ("functools", "update_wrapper"): guarded_update_wrapper,
    ("functools", "wraps"): guarded_wraps,
    ("functools", "total_ordering"): guarded_total_ordering,
}


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
    """Close, at their source and once in the zygote, the library paths no guard function sees."""
    from reconciler.policy import libraries

    libraries.harden(dispatch_name_denied)
