"""Signing against the verified test vectors of COINDCX.md."""

from __future__ import annotations

from reconciler.exchange.signing import auth_headers, serialize_body, sign

SECRET = "test-secret-123"


def test_vector_timestamp_only() -> None:
    body = serialize_body({}, timestamp_ms=1700000000000)
    assert body == b'{"timestamp":1700000000000}'
    assert sign(SECRET, body) == "c0aad0ba54dd1a2a07604c117c2381cb062a64b701a4cf1fbc015dbe15b04876"


def test_vector_order_body_signed_verbatim() -> None:
    body = (
        b'{"side":"buy","order_type":"limit_order","market":"BTCINR","price_per_unit":5000000,'
        b'"total_quantity":0.001,"timestamp":1700000000000,"client_order_id":"demo-1"}'
    )
    assert sign(SECRET, body) == "d4d8724c6c2008c293316ea6465d49fb5fb9de829fa6295725566f4e3026e365"


def test_serialize_body_reproduces_the_vector_bytes() -> None:
    params = {
        "side": "buy",
        "order_type": "limit_order",
        "market": "BTCINR",
        "price_per_unit": 5000000,
        "total_quantity": 0.001,
        "timestamp": None,  # keeps its position, as in the documented sample
        "client_order_id": "demo-1",
    }
    body = serialize_body(params, timestamp_ms=1700000000000)
    assert body == (
        b'{"side":"buy","order_type":"limit_order","market":"BTCINR","price_per_unit":5000000,'
        b'"total_quantity":0.001,"timestamp":1700000000000,"client_order_id":"demo-1"}'
    )
    assert sign(SECRET, body) == "d4d8724c6c2008c293316ea6465d49fb5fb9de829fa6295725566f4e3026e365"


def test_whitespace_changes_signature() -> None:
    assert sign(SECRET, b'{"timestamp": 1700000000000}').startswith("4a05f7fb")


def test_none_values_are_left_out_and_headers_carry_key_and_signature() -> None:
    body = serialize_body({"market": "BTCINR", "side": None}, timestamp_ms=1)
    assert body == b'{"market":"BTCINR","timestamp":1}'
    headers = auth_headers("test-key-abc", SECRET, body)
    assert headers["X-AUTH-APIKEY"] == "test-key-abc"
    assert headers["X-AUTH-SIGNATURE"] == sign(SECRET, body)
    assert headers["Content-Type"] == "application/json"
