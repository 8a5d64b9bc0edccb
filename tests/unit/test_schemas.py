"""Validation of request bodies and queries, without a database or an app."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from api.errors import RequestInvalid
from api.pagination import decode_cursor, encode_cursor
from api.schemas import DeployRequest, ExecuteQuery, ListStrategiesQuery, field_errors

BOUNDS = {"interval_bounds": (2, 3600)}


def deploy(**fields: Any) -> DeployRequest:
    body = {"user_id": "u1", "code": "x = 1", "execution_interval": 5, **fields}
    return DeployRequest.model_validate_json(json.dumps(body), context=BOUNDS)


def errors_of(**fields: Any) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        deploy(**fields)
    return {e.field: e.reason for e in field_errors(caught.value)}


def test_defaults() -> None:
    request = deploy()
    assert request.strategy_id is None
    assert request.exchange is None and request.trades_on == "paper"
    assert request.auto_start is True
    assert request.config == {}


def test_the_exchange_follows_the_credentials_unless_given() -> None:
    assert deploy(api_key="k", api_secret="s").trades_on == "coindcx"
    assert deploy(exchange="paper", api_key="k", api_secret="s").trades_on == "paper"
    assert deploy(exchange="coindcx").trades_on == "coindcx"  # refused by the route: no credentials
    assert deploy(api_key=" k\t", api_secret="s").api_key.get_secret_value() == "k"
    assert set(errors_of(api_key="  ", api_secret="s")) == {"api_key"}


def test_wrong_types_are_not_coerced() -> None:
    assert set(errors_of(execution_interval="5", auto_start="yes", config=[1], code=5)) == {
        "execution_interval",
        "auto_start",
        "config",
        "code",
    }
    assert "execution_interval" in errors_of(execution_interval=5.5)


def test_unknown_and_missing_fields() -> None:
    with pytest.raises(ValidationError) as caught:
        DeployRequest.model_validate_json(b'{"code": "x = 1", "surprise": 1}', context=BOUNDS)
    reasons = {e.field: e.reason for e in field_errors(caught.value)}
    assert reasons == {"user_id": "field required", "execution_interval": "field required", "surprise": "unknown field"}


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b'"x"', b"null"])
def test_not_a_json_object_is_a_body_error(body: bytes) -> None:
    with pytest.raises(ValidationError) as caught:
        DeployRequest.model_validate_json(body, context=BOUNDS)
    assert [e.field for e in field_errors(caught.value)] == ["body"]


@pytest.mark.parametrize("interval", [0, 1, 3601, -5])
def test_interval_outside_the_configured_bounds(interval: int) -> None:
    assert errors_of(execution_interval=interval) == {"execution_interval": "must be between 2 and 3600 seconds"}


def test_interval_at_the_bounds() -> None:
    assert deploy(execution_interval=2).execution_interval == 2
    assert deploy(execution_interval=3600).execution_interval == 3600


@pytest.mark.parametrize("strategy_id", ["", "-x", "a b", "a/b", "é", "x" * 65, "a;drop"])
def test_bad_strategy_ids(strategy_id: str) -> None:
    assert "strategy_id" in errors_of(strategy_id=strategy_id)


@pytest.mark.parametrize("strategy_id", ["a", "A1", "my-strategy.v2_0", "x" * 64])
def test_good_strategy_ids(strategy_id: str) -> None:
    assert deploy(strategy_id=strategy_id).strategy_id == strategy_id


def test_exchange_must_be_known() -> None:
    assert "exchange" in errors_of(exchange="binance")


def test_nul_characters_are_refused_everywhere_they_would_be_stored() -> None:
    assert "code" in errors_of(code="x = 1\x00")
    assert "name" in errors_of(name="a\x00")
    assert "config" in errors_of(config={"a": ["b", {"c": "\x00"}]})
    assert "config" in errors_of(config={"a\x00": 1})


def test_credentials_are_secret_in_reprs_and_errors() -> None:
    request = deploy(exchange="coindcx", api_key="KEY-PLAIN", api_secret="SECRET-PLAIN")
    assert "SECRET-PLAIN" not in repr(request)
    assert request.api_secret is not None and request.api_secret.get_secret_value() == "SECRET-PLAIN"
    with pytest.raises(ValidationError) as caught:
        deploy(api_secret="SECRET-PLAIN", execution_interval="bad")
    assert "SECRET-PLAIN" not in json.dumps([e.model_dump() for e in field_errors(caught.value)])


def test_queries_parse_text_but_refuse_unknown_parameters() -> None:
    query = ListStrategiesQuery.model_validate({"limit": "10", "include_code": "true"})
    assert query.limit == 10 and query.include_code
    for bad in ({"limit": "0"}, {"limit": "501"}, {"limit": "x"}, {"status": "nope"}, {"limt": "5"}):
        with pytest.raises(ValidationError):
            ListStrategiesQuery.model_validate(bad)


@pytest.mark.parametrize("wait", ["0", "-1", "61", "nan", "inf", "soon"])
def test_wait_bounds(wait: str) -> None:
    with pytest.raises(ValidationError):
        ExecuteQuery.model_validate({"wait": wait})


def test_cursor_round_trip_and_garbage() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    key = uuid.uuid4()
    assert decode_cursor(encode_cursor(at, key), uuid.UUID) == (at, key)
    assert decode_cursor(encode_cursor(at, "s1"), str) == (at, "s1")
    assert decode_cursor(None, str) is None
    for garbage in ("", "!!!", "bm90IGpzb24", encode_cursor(at, "s1")[:-3]):
        with pytest.raises(RequestInvalid):
            decode_cursor(garbage, uuid.UUID)


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_in_config_are_refused(number: str) -> None:
    body = '{"user_id": "u", "code": "x", "execution_interval": 5, "config": {"a": [1, ' + number + "]}}"
    with pytest.raises(ValidationError) as caught:
        DeployRequest.model_validate_json(body, context=BOUNDS)
    assert [e.field for e in field_errors(caught.value)] == ["config"]


def test_deeply_nested_config_is_refused_by_the_parser() -> None:
    body = '{"user_id": "u", "code": "x", "execution_interval": 5, "config": {"a": ' + "[" * 5000 + "]" * 5000 + "}}"
    with pytest.raises(ValidationError) as caught:
        DeployRequest.model_validate_json(body, context=BOUNDS)
    assert field_errors(caught.value)
