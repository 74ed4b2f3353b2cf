"""The operators' CLI (``meterbridge tenants|keys ...``) against the admin API on uvicorn."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from meterbridge.logic.auth import authenticate
from meterbridge_dev.cli.main import app
from meterbridge_dev.stack.servers import BackgroundServer
from tests.support.fixtures import reset_singletons
from tests.support.tenants import ADMIN_TOKEN


@pytest.fixture
def admin_url(aws: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("METERBRIDGE_ADMIN_TOKEN", ADMIN_TOKEN)
    reset_singletons()
    from meterbridge.api.admin import create_app

    with BackgroundServer(create_app()) as server:
        monkeypatch.setenv("METERBRIDGE_URL", server.url)
        yield server.url


def run(*args: str) -> dict | list:
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_operator_onboards_rotates_and_offboards_with_the_cli(admin_url: str) -> None:
    # Given the admin API and the admin token in the environment
    # When an operator creates a tenant, lists, issues, rotates, revokes, suspends and deletes
    created = run(
        "tenants", "create", "--name", "Acme", "--email", "ops@acme.example", "--plan", "basic"
    )
    tenant_id = created["tenant"]["tenant_id"]
    listed = run("tenants", "list", "--plan", "basic")
    shown = run("tenants", "show", tenant_id)
    issued = run("keys", "issue", tenant_id)
    rotated = run("keys", "rotate", tenant_id, issued["key_id"], "--grace-seconds", "0")
    revoked = run("keys", "revoke", tenant_id, created["api_key"]["key_id"])
    keys = run("keys", "list", tenant_id)
    suspended = run("tenants", "suspend", tenant_id)
    resumed = run("tenants", "resume", tenant_id)
    deleted = run("tenants", "delete", tenant_id, "--yes")

    # Then each step answered as the API does
    assert created["secret_included"] is True
    assert [t["tenant_id"] for t in listed["items"]] == [tenant_id]
    assert shown["status"] == "active"
    assert rotated["new_key"]["secret"] != issued["secret"]
    assert revoked["status"] == "revoked"
    assert len(keys) == 3 and all("secret" not in k for k in keys)
    assert suspended["status"] == "suspended" and resumed["status"] == "active"
    assert deleted["status"] == "deleted"


def test_cli_errors_exit_1_with_the_error_body(admin_url: str) -> None:
    # Given / When a create with an unknown plan
    result = CliRunner().invoke(
        app, ["tenants", "create", "--name", "A", "--email", "a@b.example", "--plan", "gold"]
    )

    # Then exit code 1 and the API's error on stderr
    assert result.exit_code == 1
    assert "invalid_request" in result.stderr


def test_cli_create_resumes_with_the_same_idempotency_key(admin_url: str) -> None:
    # Given a create that completed
    args = [
        "tenants",
        "create",
        "--name",
        "Acme",
        "--email",
        "a@acme.example",
        "--idempotency-key",
        "onboard-acme-0001",
    ]
    first = run(*args)

    # When the operator runs it again with the same key
    second = run(*args)

    # Then the same tenant comes back, without the secret
    assert second["tenant"]["tenant_id"] == first["tenant"]["tenant_id"]
    assert second["replayed"] is True and "secret" not in second["api_key"]
    assert authenticate(first["api_key"]["secret"]).tenant_id == first["tenant"]["tenant_id"]
