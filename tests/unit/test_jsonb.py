"""jsonb.dumps: floats that Python writes with an exponent are written so that jsonb gives back a float."""

from __future__ import annotations

import json

from reconciler.storage.jsonb import dumps


def test_big_floats_are_written_positionally_with_a_fraction() -> None:
    text = dumps({"a": [1.5e300, {"b": 1e16}], "s": "1e+5 stays text", "i": 10**20, "t": 1.5e-300})
    assert '"a": [1500' in text and "0.0, {" in text and '"b": 10000000000000000.0' in text
    assert json.loads(text) == {"a": [1.5e300, {"b": 1e16}], "s": "1e+5 stays text", "i": 10**20, "t": 1.5e-300}
    assert isinstance(json.loads(text)["a"][0], float)


def test_everything_else_is_plain_json() -> None:
    value = {"x": 1.25, "y": [1, "e+", None, True], "z": -1.5e-7}
    assert dumps(value) == json.dumps(value)
