"""Credential sealing: round trip, rotation, wrong key, nothing secret in repr or ciphertext."""

from __future__ import annotations

import pytest

from reconciler.crypto import (
    CredentialCipher,
    Credentials,
    DecryptionError,
    EncryptionKeyError,
    Sealed,
    generate_key,
    parse_keys,
)

SECRET = "s3cr3t-value-that-must-not-leak"
CREDS = Credentials(api_key="public-key-1234567", api_secret=SECRET)


def test_round_trip() -> None:
    cipher = CredentialCipher.from_key_string(generate_key("k1"))
    sealed = cipher.encrypt(CREDS, strategy_id="s1")
    assert sealed.key_id == "k1"
    assert cipher.decrypt(sealed, strategy_id="s1") == CREDS


def test_ciphertext_holds_no_plaintext_and_is_fresh_each_time() -> None:
    cipher = CredentialCipher.from_key_string(generate_key("k1"))
    first = cipher.encrypt(CREDS, strategy_id="s1")
    second = cipher.encrypt(CREDS, strategy_id="s1")
    for sealed in (first, second):
        assert SECRET.encode() not in sealed.ciphertext
        assert CREDS.api_key.encode() not in sealed.ciphertext
    assert first.ciphertext != second.ciphertext  # random nonce per seal


def test_rotation_first_key_seals_all_keys_open() -> None:
    old = generate_key("old")
    new = generate_key("new")
    sealed_old = CredentialCipher.from_key_string(old).encrypt(CREDS, strategy_id="s1")
    rotating = CredentialCipher.from_key_string(f"{new},{old}")
    assert rotating.decrypt(sealed_old, strategy_id="s1") == CREDS
    resealed = rotating.reseal(sealed_old, strategy_id="s1")
    assert resealed.key_id == "new"
    # Once re-sealed, the old key can be dropped.
    assert CredentialCipher.from_key_string(new).decrypt(resealed, strategy_id="s1") == CREDS


def test_unknown_key_id_is_named() -> None:
    sealed = CredentialCipher.from_key_string(generate_key("gone")).encrypt(CREDS, strategy_id="s1")
    with pytest.raises(DecryptionError, match=r"'gone'.*not in ENCRYPTION_KEY"):
        CredentialCipher.from_key_string(generate_key("k2")).decrypt(sealed, strategy_id="s1")


def test_wrong_key_material_under_same_id() -> None:
    sealed = CredentialCipher.from_key_string(generate_key("k1")).encrypt(CREDS, strategy_id="s1")
    with pytest.raises(DecryptionError, match="do not open") as info:
        CredentialCipher.from_key_string(generate_key("k1")).decrypt(sealed, strategy_id="s1")
    assert SECRET not in str(info.value)


def test_ciphertext_bound_to_its_strategy() -> None:
    cipher = CredentialCipher.from_key_string(generate_key("k1"))
    sealed = cipher.encrypt(CREDS, strategy_id="s1")
    with pytest.raises(DecryptionError):
        cipher.decrypt(sealed, strategy_id="s2")


def test_tampered_or_truncated_ciphertext() -> None:
    cipher = CredentialCipher.from_key_string(generate_key("k1"))
    sealed = cipher.encrypt(CREDS, strategy_id="s1")
    flipped = bytearray(sealed.ciphertext)
    flipped[-1] ^= 1
    with pytest.raises(DecryptionError):
        cipher.decrypt(Sealed("k1", bytes(flipped)), strategy_id="s1")
    with pytest.raises(DecryptionError, match="not a sealed blob"):
        cipher.decrypt(Sealed("k1", b"\x01abc"), strategy_id="s1")


@pytest.mark.parametrize("value", [None, "", "  "])
def test_missing_key_is_a_clear_error(value: str | None) -> None:
    with pytest.raises(EncryptionKeyError, match=r"ENCRYPTION_KEY is not set.*generate-key"):
        CredentialCipher.from_key_string(value)


def test_missing_key_allowed_for_paper_only_but_use_fails_clearly() -> None:
    cipher = CredentialCipher.from_key_string(None, required=False)
    with pytest.raises(EncryptionKeyError, match="not set"):
        cipher.encrypt(CREDS, strategy_id="s1")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("no-colon", "not '<key_id>:"),
        ("k1:!!!notbase64!!!", "not base64|decodes to"),
        ("k1:c2hvcnQ=", "decodes to 5 bytes"),
        ("bad id:" + "A" * 43, "not '<key_id>:"),
    ],
)
def test_malformed_key_is_a_clear_error_that_does_not_echo_it(value: str, message: str) -> None:
    with pytest.raises(EncryptionKeyError, match=message) as info:
        parse_keys(value)
    assert value.partition(":")[2] not in str(info.value) or not value.partition(":")[2]


def test_duplicate_key_id_rejected() -> None:
    key = generate_key("k1")
    with pytest.raises(EncryptionKeyError, match="twice"):
        parse_keys(f"{key},{generate_key('k1')}")


def test_from_settings_reads_secretstr() -> None:
    from reconciler.settings import Settings

    key = generate_key("k9")
    cipher = CredentialCipher.from_settings(Settings(encryption_key=key))
    assert cipher.current_key_id == "k9"
    with pytest.raises(EncryptionKeyError):
        CredentialCipher.from_settings(Settings(encryption_key=None))


def test_no_secret_in_repr_or_str() -> None:
    key = generate_key("k1")
    cipher = CredentialCipher.from_key_string(key)
    sealed = cipher.encrypt(CREDS, strategy_id="s1")
    for text in (repr(CREDS), str(CREDS), repr(cipher), repr(sealed), str([CREDS])):
        assert SECRET not in text
        assert key.partition(":")[2] not in text
        assert CREDS.api_key not in text


def test_generated_keys_parse_and_differ() -> None:
    first, second = generate_key(), generate_key()
    assert first != second
    ((key_id, raw),) = parse_keys(first)
    assert len(raw) == 32 and first.startswith(key_id + ":")
