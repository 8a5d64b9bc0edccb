"""The language policy's allow- and deny-lists: which modules and which names a strategy may use.

Data only, read by the compile-time check (`compile`) and by the run-time guards (`guards`).
"""

from __future__ import annotations

from RestrictedPython.transformer import INSPECT_ATTRIBUTES

# Modules a strategy may import. pandas and numpy are handed out as guarded views (no file or network
# I/O); `typing` as a curated view (no `get_type_hints`, which evaluates strings). Anything that reaches
# the operating system (os, sys, subprocess, socket, ctypes, io, pathlib, importlib, pickle, ...) or
# reflects on frames and objects (inspect, gc, operator.attrgetter) is deliberately absent.
ALLOWED_MODULES: frozenset[str] = frozenset(
    {
        "math",
        "cmath",
        "statistics",
        "datetime",
        "json",
        "time",
        "random",
        "collections",
        "collections.abc",
        "itertools",
        "functools",
        "decimal",
        "fractions",
        "numbers",
        "re",
        "typing",
        "string",
        "bisect",
        "heapq",
        "copy",
        "calendar",
        "pandas",
        "numpy",
    }
)

# Attribute names refused on every object: frame, code and closure reflection under names without `_`
# (Cython functions keep Python 2's `func_globals` and friends).
DENIED_EVERYWHERE = INSPECT_ATTRIBUTES | {
    "func_globals",
    "func_code",
    "func_closure",
    "func_dict",
    "func_defaults",
    "im_func",
    "im_self",
    "im_class",
    "f_locals",
    "f_globals",
    "f_builtins",
    "f_back",
    "f_code",
    "tb_frame",
    "tb_next",
    "gi_frame",
    "gi_code",
    "cr_frame",
    "ag_frame",
}

# pandas and numpy: I/O, evaluation of strings, native access, test runners and toolchains.
DENIED_LIBRARY_NAMES = frozenset(
    {
        "load",
        "loads",
        "save",
        "savez",
        "savez_compressed",
        "savetxt",
        "loadtxt",
        "genfromtxt",
        "fromfile",
        "tofile",
        "fromregex",
        "memmap",
        "open_memmap",
        "DataSource",
        "dump",
        "dumps",
        "ExcelFile",
        "ExcelWriter",
        "HDFStore",
        "to_pickle",
        "to_parquet",
        "to_feather",
        "to_hdf",
        "to_sql",
        "to_excel",
        "to_stata",
        "to_clipboard",
        "to_gbq",
        "to_orc",
        "to_iceberg",
        "eval",
        "query",
        "ctypes",
        "ctypeslib",
        "cffi",
        "capsule",
        "f2py",
        "distutils",
        "testing",
        "test",
        "lib",
        "core",
        "compat",
        "util",
        "io",
        "plotting",
        "show_config",
        "show_versions",
        "show_runtime",
        "get_include",
        "style",
        "plot",
        "hist",
        "boxplot",
        "set_eng_float_format",
    }
)
DENIED_LIBRARY_PREFIXES = ("read_",)

# Methods that write to a path when given one and return a string otherwise (or, for `info`, print):
# allowed without a path.
PATHLESS = frozenset(
    {
        "to_csv",
        "to_json",
        "to_string",
        "to_html",
        "to_markdown",
        "to_latex",
        "to_xml",
        "info",
    }
)
PATH_KEYWORDS = frozenset({"path_or_buf", "buf", "path_or_buffer", "path", "excel_writer"})

# pandas methods that look a string argument up as a method name (`df.agg("mean")`): the name must not
# lead to a denied method or a dunder (`df.agg("eval", ...)`, `df.agg("__getattribute__", ...)`).
STRING_DISPATCH = frozenset({"agg", "aggregate", "apply", "transform", "pivot_table", "resample"})

# Submodules reachable as attributes of allowed modules (`np.random`, `pd.offsets`, `collections.abc`).
VIEWABLE_SUBMODULES = frozenset(
    {
        "numpy.random",
        "numpy.linalg",
        "numpy.fft",
        "numpy.polynomial",
        "numpy.dtypes",
        "numpy.exceptions",
        "numpy.char",
        "numpy.strings",
        "numpy.emath",
        "numpy.lib.scimath",
        "pandas.api",
        "pandas.api.types",
        "pandas.tseries",
        "pandas.tseries.offsets",
        "pandas.tseries.frequencies",
        "pandas.errors",
        "pandas.arrays",
    }
)

# What a strategy may use of `typing`. Not `get_type_hints`, `ForwardRef` or `NamedTuple`: string
# annotations become ForwardRefs, and evaluating one is a plain `eval` outside every guard (with the
# real builtins when the globals are empty).
TYPING_NAMES = frozenset(
    {
        "Any",
        "Optional",
        "Union",
        "List",
        "Dict",
        "Tuple",
        "Set",
        "FrozenSet",
        "Callable",
        "Iterable",
        "Iterator",
        "Sequence",
        "Mapping",
        "MutableMapping",
        "Literal",
        "Final",
        "cast",
        "TYPE_CHECKING",
        "Deque",
        "DefaultDict",
        "Counter",
        "OrderedDict",
        "Type",
    }
)

VIEW_ALLOWED_NAMES: dict[str, frozenset[str]] = {"typing": TYPING_NAMES}
VIEW_DENIED_NAMES: dict[str, frozenset[str]] = {
    "string": frozenset({"Formatter"}),
    "random": frozenset({"SystemRandom"}),  # os.urandom: harmless, but nothing a strategy needs
    # copyreg's table of reducers: a reducer registered here makes copy.copy() call setattr() with
    # names of the strategy's choosing on an object of its choosing.
    "copy": frozenset({"dispatch_table"}),
    # singledispatch.register(obj) calls typing.get_type_hints(obj): the eval described above.
    "functools": frozenset({"singledispatch", "singledispatchmethod"}),
}


SAFE_BUILTIN_NAMES = (
    "None",
    "False",
    "True",
    "Ellipsis",
    "NotImplemented",
    "abs",
    "all",
    "any",
    "ascii",
    "bin",
    "bool",
    "bytes",
    "callable",
    "chr",
    "classmethod",
    "complex",
    "dict",
    "divmod",
    "enumerate",
    "filter",
    "float",
    "format",
    "frozenset",
    "hash",
    "hex",
    "id",
    "int",
    "isinstance",
    "issubclass",
    "iter",
    "len",
    "list",
    "map",
    "max",
    "min",
    "next",
    "object",
    "oct",
    "ord",
    "pow",
    "property",
    "range",
    "repr",
    "reversed",
    "round",
    "set",
    "slice",
    "sorted",
    "staticmethod",
    "str",
    "sum",
    "tuple",
    "zip",
)


# Builtins that exist in Python but not here: a clear policy error instead of a NameError.
REFUSED_BUILTINS = {
    "open": "open() is not available: strategies cannot read or write files",
    "input": "input() is not available to strategies",
    "globals": "globals() is not available to strategies",
    "locals": "locals() is not available to strategies",
    "vars": "vars() is not available to strategies",
    "dir": "dir() is not available to strategies",
    "compile": "compile() is not available to strategies",
    "memoryview": "memoryview() is not available to strategies",
    "help": "help() is not available to strategies",
    "exit": "exit() is not available: end the strategy by returning from it",
    "quit": "quit() is not available: end the strategy by returning from it",
}
