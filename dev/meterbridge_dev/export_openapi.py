"""Write the usage API's OpenAPI schema, exactly as the app serves it, to ``docs/openapi.json``.

    python -m meterbridge_dev.export_openapi [--output PATH] [--check]

The JSON is written with sorted keys and a two-space indent, so a change in the served schema
is a readable diff. ``--check`` writes nothing and exits 1 when the file differs from the
served schema (``tests/unit/project/test_openapi_drift.py`` makes the same comparison).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import meterbridge

DEFAULT_OUTPUT = Path(meterbridge.__file__).resolve().parents[2] / "docs" / "openapi.json"


def served_schema() -> dict[str, Any]:
    """The schema ``GET /openapi.json`` answers with on the usage API."""
    from meterbridge.api.usage import create_app

    return create_app().openapi()


def render(schema: dict[str, Any]) -> str:
    """The canonical text of a schema: sorted keys, two-space indent, final newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export the usage API's OpenAPI schema")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    text = render(served_schema())
    output: Path = args.output
    if args.check:
        current = output.read_text() if output.exists() else ""
        if current != text:
            sys.stderr.write(f"{output} is stale: run python -m meterbridge_dev.export_openapi\n")
            return 1
        return 0
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    sys.stderr.write(f"wrote {output}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
