"""One vocabulary of refusal kinds: the broker's, the supervisor's and the README's are the same."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from reconciler import refusals
from reconciler.exchange import errors

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_broker_uses_the_shared_kinds() -> None:
    used = {value for name, value in vars(errors).items() if name.isupper() and isinstance(value, str)}
    assert used <= set(refusals.KINDS)


def test_the_readme_lists_every_kind() -> None:
    listed = set(re.findall(r"^\| `([a-z_]+)` \| ", README.read_text(), re.M)) & set(refusals.KINDS)
    assert listed == set(refusals.KINDS)


def test_an_internal_error_quotes_a_reference_never_the_exception(caplog) -> None:  # type: ignore[no-untyped-def]
    with caplog.at_level(logging.ERROR):
        error = refusals.internal_error("get_balances", RuntimeError("secret-xyz"), logging.getLogger("t"), "test")
    assert error.kind == refusals.INTERNAL and "secret-xyz" not in error.message
    reference = re.search(r"reference ([0-9a-f]{8})", error.message)
    assert reference is not None and reference.group(1) in caplog.text
    database = refusals.internal_error("create_order", OSError(), logging.getLogger("t"), "test", database=True)
    assert "could not reach its database" in database.message
