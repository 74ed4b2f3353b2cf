"""What the streaming service shows an anonymous caller (real uvicorn, nats-server, moto)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from meterbridge.settings import get_settings
from tests.support.builders import make_tenant
from tests.support.streams import (
    auth,
    stream_app_fixture,  # noqa: F401 - the stream_app fixture
)


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"])
async def test_no_schema_or_docs_pages(stream_app: dict[str, Any], path: str) -> None:
    # Given the streaming service as ECS runs it
    async with httpx.AsyncClient(base_url=stream_app["url"], timeout=30) as http:
        # When an anonymous caller asks for the schema or the docs pages
        response = await http.get(path)

    # Then there is nothing there
    assert response.status_code == 404


async def test_status_needs_the_admin_token(
    stream_app: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the service with no admin token configured (as template.yaml deploys it), and a
    # tenant's valid key
    _, key = make_tenant()
    async with httpx.AsyncClient(base_url=stream_app["url"], timeout=30) as http:
        # When /status is asked anonymously, or with a tenant key
        anonymous = await http.get("/status")
        tenant = await http.get("/status", headers=auth(key))

        # And then with an admin token configured: a wrong token, then the right one
        monkeypatch.setenv("METERBRIDGE_ADMIN_TOKEN", "ops-token-for-status")
        get_settings.cache_clear()
        wrong = await http.get("/status", headers=auth("not-the-token"))
        right = await http.get("/status", headers=auth("ops-token-for-status"))

    # Then only the admin token reads the task's clients and position
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthorized"
    assert "clients" not in anonymous.text
    assert tenant.status_code == 401
    assert wrong.status_code == 401
    assert right.status_code == 200
    assert right.json()["service"] == "streaming"
    assert right.json()["clients"] == 0
