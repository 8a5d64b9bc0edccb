"""Settings come from the environment with the names users know; bad values give one clear line."""

from __future__ import annotations

import pytest

from reconciler.settings import SettingsError, load_settings


def test_defaults_users_already_know(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PORT", "LOG_LEVEL", "MAX_CONCURRENT_STRATEGIES", "MAX_MEMORY_MB", "MAX_CPU_TIME_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.port == 8003
    assert settings.log_level == "INFO"
    assert settings.max_concurrent_strategies == 5
    assert settings.max_memory_mb == 100
    assert settings.max_cpu_time_seconds == 30


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9000")
    monkeypatch.setenv("MAX_CONCURRENT_STRATEGIES", "8")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db/x")
    settings = load_settings()
    assert (settings.port, settings.max_concurrent_strategies) == (9000, 8)
    assert settings.database_url is not None and not settings.embedded_database


def test_empty_database_url_means_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "")
    assert load_settings().embedded_database


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("PORT", "abc", "PORT: Input should be a valid integer"),
        ("MAX_MEMORY_MB", "-1", "MAX_MEMORY_MB: Input should be greater than or equal to 16"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL: Input should be"),
        ("MAX_CONCURRENT_STRATEGIES", "0", "MAX_CONCURRENT_STRATEGIES"),
        # A JSON-valued setting that is not JSON at all: refused by the settings source, before validation.
        ("PAPER_INITIAL_BALANCES", "{bad", "PAPER_INITIAL_BALANCES: not valid JSON"),
        # Above the default maximum (7 days): every deploy would be refused.
        ("MIN_EXECUTION_INTERVAL", "100000000", "MAX_EXECUTION_INTERVAL: is below MIN_EXECUTION_INTERVAL (100000000)"),
    ],
)
def test_bad_values_name_the_variable_in_one_line(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_secret_values_are_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_SECRET", "")
    monkeypatch.setenv("EXECUTOR_API_TOKEN", "s3cr3t-token")
    settings = load_settings()
    assert "s3cr3t-token" not in repr(settings)
