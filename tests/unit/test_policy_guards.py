"""The run-time guards' defences that strategy code cannot even reach any more (no processes).

The sandbox tests prove a strategy is refused before it gets a metaclass or renames a library class;
these check the layer behind that: a class that does lie is still recognised and filtered.
"""

from __future__ import annotations

import functools
import statistics
from typing import Any

import numpy as np
import pandas as pd
import pytest

from reconciler.policy import PolicyViolation, guards


def _strategy_namespace() -> dict[str, Any]:
    return {"__name__": guards.STRATEGY_MODULE, "__builtins__": guards.make_builtins()}


def _lying_metaclass(**attributes: Any) -> type:
    return type("Lie", (type,), {"__module__": guards.STRATEGY_MODULE, **attributes})


@pytest.mark.parametrize(
    "attributes",
    [
        {"__mro__": property(lambda cls: (cls, object))},  # a descriptor that hides the real MRO
        {"__module__": property(lambda cls: guards.STRATEGY_MODULE)},  # every class claims to be ours
    ],
    ids=["mro-descriptor", "module-descriptor"],
)
def test_a_metaclass_that_lies_does_not_shed_the_library_filter(attributes: dict[str, Any]) -> None:
    meta = _lying_metaclass(**attributes)
    frame_class = meta("Frame", (pd.DataFrame,), {"__module__": guards.STRATEGY_MODULE})
    frame = frame_class({"a": [1.0]})
    assert guards._is_library_object(frame)
    with pytest.raises(PolicyViolation, match="cannot write files"):
        guards.guarded_getattr(frame, "to_csv")("/tmp/owned-by-a-lie.csv")
    with pytest.raises(PolicyViolation, match="not available"):
        guards.guarded_getattr(frame, "to_pickle")


def test_a_class_made_by_a_strategy_metaclass_is_filtered_even_without_library_bases() -> None:
    meta = _lying_metaclass(mro=lambda cls: [cls, object])
    plain = meta("Plain", (), {"__module__": guards.STRATEGY_MODULE})
    assert guards._is_library_object(plain())
    assert not guards._is_library_object(type("Mine", (), {"__module__": guards.STRATEGY_MODULE})())


def test_metaclasses_are_never_handed_out() -> None:
    with pytest.raises(PolicyViolation, match="type\\(\\) of a class"):
        guards._one_argument_type(int)
    with pytest.raises(PolicyViolation, match="metaclasses"):
        guards._vet(type)
    with pytest.raises(PolicyViolation, match="metaclasses"):
        guards.guarded_getattr(guards.guarded_import("numbers"), "ABCMeta")
    assert guards._one_argument_type(1) is int
    assert guards._one_argument_type(np.zeros(1)) is guards._GUARDED_CLASSES[np.ndarray]


def test_mro_lists_are_vetted() -> None:
    listed = guards.guarded_getattr(np.matrix, "mro")()
    assert listed[1] is guards._GUARDED_CLASSES[np.ndarray]
    with pytest.raises(PolicyViolation, match="raw buffer"):
        listed[1]((1,), object, bytes(8))


def test_update_wrapper_copies_only_the_standard_attributes_onto_strategy_objects() -> None:
    namespace = _strategy_namespace()
    exec("def wrapper(x):\n    return x\n", namespace)
    wrapper = namespace["wrapper"]
    assert guards.guarded_update_wrapper(wrapper, statistics.mean) is wrapper
    assert wrapper.__name__ == "mean"
    with pytest.raises(PolicyViolation, match="standard attributes"):
        guards.guarded_update_wrapper(wrapper, statistics.mean, (), ("__globals__",))
    with pytest.raises(PolicyViolation, match="standard attributes"):
        guards.guarded_wraps(statistics.mean, assigned=("__class__",))
    with pytest.raises(PolicyViolation, match="strategy's own"):
        guards.guarded_update_wrapper(pd.DataFrame, wrapper)
    with pytest.raises(PolicyViolation, match="strategy's own"):
        guards.guarded_update_wrapper(functools.partial(print), wrapper)
    with pytest.raises(PolicyViolation, match="strategy's own"):
        guards.guarded_total_ordering(pd.DataFrame)


def test_library_modules_imported_by_c_code_are_found_but_not_importable_by_name() -> None:
    import sys

    assert guards.guarded_import("numpy._core._internal") is sys.modules["numpy._core._internal"]
    with pytest.raises(PolicyViolation):
        guards.guarded_import("os")
    with pytest.raises(PolicyViolation):
        guards.guarded_import("numpy.not_loaded_anywhere")


@pytest.mark.parametrize(
    "value",
    [
        ["sum", ["mean", {"x": "__sizeof__"}]],
        {"__sizeof__": "sum"},
        {"a", "__reduce__"},
        np.array(["sum", "__reduce__"]),
        pd.Series(["to_pickle"]),
        pd.NamedAgg("b", "__sizeof__"),
    ],
    ids=["nested", "dict-key", "set", "array", "series", "named-agg"],
)
def test_dispatch_names_are_found_in_every_list_like(value: Any) -> None:
    with pytest.raises(PolicyViolation, match="cannot be used as a function name"):
        guards.check_dispatch_strings(value)


def test_dispatch_check_passes_ordinary_arguments() -> None:
    for value in (["sum", "mean"], np.arange(3.0), pd.Series([1.0]), pd.DataFrame({"a": [1]}), None, 3, len):
        guards.check_dispatch_strings(value)
    with pytest.raises(PolicyViolation, match="iterator"):
        guards.check_dispatch_strings(iter(["sum"]))
