"""Log lines: text by default, JSON with LOG_FORMAT=json, execution context on every line, secrets masked."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Callable, Iterator

import pytest

from reconciler import logging_setup
from reconciler.crypto import generate_key
from reconciler.settings import load_settings

Capture = Callable[[str], io.StringIO]


@pytest.fixture
def captured() -> Iterator[Callable[[str], io.StringIO]]:
    """The root handler configure_logging installs, writing to a buffer; the previous handlers restored."""
    root = logging.getLogger()
    before, level = root.handlers[:], root.level
    buffer = io.StringIO()

    def configure(fmt: str) -> io.StringIO:
        logging_setup.configure_logging("DEBUG", fmt)
        root.handlers[0].setStream(buffer)  # type: ignore[attr-defined]
        return buffer

    yield configure
    root.handlers[:] = before
    root.setLevel(level)


def test_json_lines_carry_the_bound_execution_fields(captured: Capture) -> None:
    buffer = captured("json")
    log = logging.getLogger("tests.ops")
    with logging_setup.bound(replica="r-1", strategy_id="s-1", execution_id="e-1"):
        log.warning("execution %s: %s", "e-1", "something")
    log.info("outside")
    first, second = (json.loads(line) for line in buffer.getvalue().splitlines())
    assert first["message"] == "execution e-1: something" and first["level"] == "WARNING"
    assert (first["replica"], first["strategy_id"], first["execution_id"]) == ("r-1", "s-1", "e-1")
    assert first["logger"] == "tests.ops" and first["time"].endswith("+00:00")
    assert "strategy_id" not in second and second["message"] == "outside"


def test_text_lines_end_with_the_fields_in_a_fixed_order(captured: Capture) -> None:
    buffer = captured("text")
    with logging_setup.bound(execution_id="e-2", strategy_id="s-2", replica="r-2"):
        logging.getLogger("tests.ops").error("failed")
    line = buffer.getvalue().strip()
    assert " ERROR   tests.ops: failed [replica=r-2 strategy_id=s-2 execution_id=e-2]" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_fields_bound_in_one_task_stay_on_that_task_s_lines(captured: Capture) -> None:
    buffer = captured("json")
    log = logging.getLogger("tests.ops")

    async def execution(name: str, gate: asyncio.Event) -> None:
        logging_setup.bind(strategy_id=name, execution_id=f"e-{name}")
        await gate.wait()  # the other task binds its own fields meanwhile
        log.info("finished %s", name)

    async def main() -> None:
        logging_setup.bind(replica="r-3")
        gate = asyncio.Event()
        tasks = [asyncio.create_task(execution(name, gate)) for name in ("a", "b")]
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(*tasks)
        log.info("replica line")

    asyncio.run(main())
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    by_message = {line["message"]: line for line in lines}
    for name in ("a", "b"):
        line = by_message[f"finished {name}"]
        assert (line["replica"], line["strategy_id"], line["execution_id"]) == ("r-3", name, f"e-{name}")
    assert by_message["replica line"]["replica"] == "r-3" and "strategy_id" not in by_message["replica line"]


def test_the_service_s_own_secrets_never_reach_a_line(captured: Capture, monkeypatch: pytest.MonkeyPatch) -> None:
    key = generate_key("k1")
    monkeypatch.setenv("EXECUTOR_API_TOKEN", "token-abcdef-123456")
    monkeypatch.setenv("ENCRYPTION_KEY", key)
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:db-password-xyz@db/app")
    logging_setup.redact_settings(load_settings())
    for fmt in ("text", "json"):
        buffer = captured(fmt)
        log = logging.getLogger("tests.ops")
        log.error("token %s key %s material %s", "token-abcdef-123456", key, key.partition(":")[2])
        try:
            raise RuntimeError("connect to postgresql://app:db-password-xyz@db/app failed")
        except RuntimeError:
            log.exception("database")
        text = buffer.getvalue()
        assert "***" in text
        for secret in ("token-abcdef-123456", key.partition(":")[2], "db-password-xyz"):
            assert secret not in text
