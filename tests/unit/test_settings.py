from __future__ import annotations

import pytest
from pydantic import ValidationError

from meterbridge.settings import Settings


def test_comma_separated_webhook_secrets_and_nats_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given two webhook secrets during a rotation and two NATS servers
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_old, whsec_new")
    monkeypatch.setenv("NATS_SERVERS", "nats://a:4222,nats://b:4222")
    # When the settings are read
    settings = Settings()
    # Then both lists keep their order and drop blanks
    assert settings.stripe_webhook_secret == ["whsec_old", "whsec_new"]
    assert settings.nats_servers == ["nats://a:4222", "nats://b:4222"]


def test_table_names_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given table names set the way template.yaml sets them
    monkeypatch.setenv("TENANTS_TABLE", "t1")
    monkeypatch.setenv("EVENTS_TABLE", "e1")
    monkeypatch.setenv("USAGE_TABLE", "u1")
    monkeypatch.setenv("IDEMPOTENCY_TABLE", "i1")
    # When / Then
    s = Settings()
    assert (s.tenants_table, s.events_table, s.usage_table, s.idempotency_table) == (
        "t1",
        "e1",
        "u1",
        "i1",
    )


@pytest.mark.parametrize(
    "missing", ["TENANTS_TABLE", "EVENTS_TABLE", "USAGE_TABLE", "IDEMPOTENCY_TABLE"]
)
def test_a_missing_table_name_fails_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    # Given every table name set but one
    monkeypatch.delenv(missing)

    # When the settings load
    with pytest.raises(ValidationError) as refused:
        Settings()

    # Then they refuse, naming the variable (no default table name is used)
    assert missing in str(refused.value)
    assert [error["loc"] for error in refused.value.errors()] == [(missing,)]


def test_secrets_are_not_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given secrets in the environment
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_supersecret")
    monkeypatch.setenv("METERBRIDGE_ADMIN_TOKEN", "admintoken-secret")
    monkeypatch.setenv("OPENMETER_API_KEY", "om_secret")
    # When the settings are printed (as a careless log line would)
    text = repr(Settings())
    # Then no secret appears
    for secret in ("sk_test_supersecret", "admintoken-secret", "om_secret"):
        assert secret not in text


def test_invalid_admin_auth_mode_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an unknown admin auth mode
    monkeypatch.setenv("METERBRIDGE_ADMIN_AUTH", "none")
    # When / Then the settings refuse to load rather than leaving the admin API open
    with pytest.raises(ValidationError):
        Settings()
