"""docs/openapi.json is the usage API's schema as served; every route documents its errors."""

from __future__ import annotations

import json

from meterbridge_dev.export_openapi import DEFAULT_OUTPUT, main, render, served_schema

RERUN = "run `python -m meterbridge_dev.export_openapi` and commit docs/openapi.json"


def test_checked_in_schema_is_the_served_schema() -> None:
    # Given the schema the app serves and the copy in docs/
    served = render(served_schema())
    checked_in = DEFAULT_OUTPUT.read_text() if DEFAULT_OUTPUT.exists() else ""
    # When / Then they are the same text
    assert checked_in == served, f"docs/openapi.json differs from the served schema: {RERUN}"


def test_every_route_documents_its_error_responses() -> None:
    # Given the served schema
    schema = served_schema()
    # When each operation's responses are read
    missing = {}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            statuses = set(operation["responses"])
            # Then every route documents auth failures and invalid input with the error body
            want = {"400", "401", "403"}
            if method == "post":
                want |= {"413", "415", "429", "503"}
            absent = want - statuses
            if absent:
                missing[f"{method.upper()} {path}"] = sorted(absent)
            for status in statuses & want:
                content = operation["responses"][status]["content"]["application/json"]
                assert "error" in json.dumps(content["schema"]), (method, path, status)
    assert missing == {}, missing


def test_check_mode_flags_a_stale_copy(tmp_path) -> None:
    # Given a stale copy of the schema
    stale = tmp_path / "openapi.json"
    stale.write_text("{}\n")
    # When the exporter checks it, then writes it
    stale_exit = main(["--output", str(stale), "--check"])
    main(["--output", str(stale)])
    fresh_exit = main(["--output", str(stale), "--check"])
    # Then the stale copy fails the check and the written one passes
    assert (stale_exit, fresh_exit) == (1, 0)
    assert json.loads(stale.read_text())["paths"].keys() == {
        "/v1/events",
        "/v1/usage",
        "/v1/usage/query",
    }
