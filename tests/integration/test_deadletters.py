"""Dead letters: the admin API and ``meterbridge deadletters`` over real HTTP (issue 5)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from meterbridge.api import admin_deadletters
from meterbridge.api.errors import install_error_handlers
from meterbridge.logic import flush
from meterbridge_dev.cli.main import app as cli
from meterbridge_dev.stack.servers import BackgroundServer
from tests.support import flush as flush_support
from tests.support.fixtures import reset_singletons
from tests.support.flush import (
    fast_client,
    fast_config,
    fill_outbox,
    make_events,
)

sink = flush_support.sink  # the OpenMeter fake fixture

TOKEN = "admin-test-token"


@pytest.fixture
def admin(aws, monkeypatch) -> Iterator[httpx.Client]:
    monkeypatch.setenv("METERBRIDGE_ADMIN_TOKEN", TOKEN)
    reset_singletons()
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(admin_deadletters.router)
    with (
        BackgroundServer(app) as server,
        httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as http,
    ):
        monkeypatch.setenv("METERBRIDGE_URL", server.url)
        yield http


def dead_letter_three(aws, sink) -> list[str]:
    """Flush 20 events of which three are poison; return the poison ids."""
    state, url = sink
    events = make_events(20)
    fill_outbox(aws["EventsTable"], events)
    poison = [events[3].id, events[9].id, events[15].id]
    state.poison(*poison)
    result = flush.flush_outbox(config=fast_config(), client=fast_client(url))
    assert result.dead_lettered == 3 and result.sent == 17
    return poison


def test_list_is_paginated_and_shows_the_error(aws, sink, admin):
    # Given
    poison = dead_letter_three(aws, sink)

    # When
    first = admin.get("/admin/deadletters", params={"limit": 2}).json()
    second = admin.get(
        "/admin/deadletters", params={"limit": 2, "cursor": first["next_cursor"]}
    ).json()

    # Then
    listed = first["items"] + second["items"]
    assert sorted(i["event_id"] for i in listed) == sorted(poison)
    assert second["next_cursor"] is None
    assert all(i["error"]["status"] == 400 for i in listed)
    assert all(i["tenant_id"] == "t1" and i["event"]["id"] == i["event_id"] for i in listed)


def test_retry_one_puts_it_back_and_the_next_flush_delivers_it(aws, sink, admin):
    # Given
    state, url = sink
    poison = dead_letter_three(aws, sink)
    item = next(
        i for i in admin.get("/admin/deadletters").json()["items"] if i["event_id"] == poison[0]
    )
    state.unpoison(poison[0])

    # When
    retried = admin.post(f"/admin/deadletters/{item['id']}/retry")
    again = admin.post(f"/admin/deadletters/{item['id']}/retry")
    result = flush.flush_outbox(config=fast_config(), client=fast_client(url))

    # Then
    assert retried.status_code == 200 and retried.json()["event_id"] == poison[0]
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    assert result.sent == 1 and result.dead_lettered == 0
    assert state.count(item["source"], poison[0]) == 1
    assert len(admin.get("/admin/deadletters").json()["items"]) == 2


def test_unknown_id_is_404_and_no_token_is_401(aws, admin):
    # Given
    unknown = "bm90LWEta2V5"

    # When
    missing = admin.post(f"/admin/deadletters/{unknown}/retry")
    anonymous = httpx.get(f"{admin.base_url}/admin/deadletters")

    # Then
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert anonymous.status_code == 401


def test_cli_lists_and_retries_all(aws, sink, admin):
    # Given
    state, url = sink
    poison = dead_letter_three(aws, sink)
    state.unpoison(*poison)
    runner = CliRunner()

    # When
    listed = runner.invoke(cli, ["deadletters", "list", "--json"])
    retried = runner.invoke(cli, ["deadletters", "retry", "--all", "--json"])
    result = flush.flush_outbox(config=fast_config(), client=fast_client(url))

    # Then
    assert listed.exit_code == 0, listed.output
    assert sorted(i["event_id"] for i in json.loads(listed.stdout)["items"]) == sorted(poison)
    assert retried.exit_code == 0, retried.output
    assert len(json.loads(retried.stdout)["retried"]) == 3
    assert result.sent == 3
    assert json.loads(runner.invoke(cli, ["deadletters", "list", "--json"]).stdout)["items"] == []


def test_cli_retry_needs_ids_or_all(aws, admin):
    # Given
    runner = CliRunner()

    # When
    result = runner.invoke(cli, ["deadletters", "retry"])

    # Then
    assert result.exit_code != 0
