"""docs/environment-variables.md and the settings model tell the same story."""

from __future__ import annotations

import re
from pathlib import Path

from meterbridge.settings import Settings

DOC = Path(__file__).resolve().parents[3] / "docs" / "environment-variables.md"


def _documented_settings() -> set[str]:
    """Variables in the doc's settings table (the section before '## Read by libraries')."""
    text = DOC.read_text().split("## Read by libraries")[0]
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", text, flags=re.M))


def test_every_setting_is_documented_and_every_documented_variable_is_a_setting() -> None:
    # Given the names the settings model reads
    read = {field.alias for field in Settings.model_fields.values() if field.alias}
    # When compared with the documented table
    documented = _documented_settings()
    # Then neither has a name the other lacks
    assert read - documented == set(), f"undocumented: {sorted(read - documented)}"
    assert documented - read == set(), f"documented but not read: {sorted(documented - read)}"
