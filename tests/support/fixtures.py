"""Helpers the fixtures use and tests import: a test imports these, never a conftest."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EVENTS_DIR = ROOT / "events"


def reset_singletons() -> None:
    """Forget cached settings and clients after the environment changed."""
    from meterbridge.bus.publisher import reset_publisher
    from meterbridge.dal import dynamo
    from meterbridge.settings import get_settings

    get_settings.cache_clear()
    dynamo.reset_clients()
    reset_publisher()


def load_event(name: str) -> dict[str, Any]:
    """An event fixture from ``events/`` by file name (with or without ``.json``)."""
    path = EVENTS_DIR / (name if name.endswith(".json") else f"{name}.json")
    return json.loads(path.read_text())


def docker_available() -> tuple[bool, str]:
    if not os.path.exists("/var/run/docker.sock") and not os.environ.get("DOCKER_HOST"):
        return False, "no Docker engine socket (DOCKER_HOST unset, /var/run/docker.sock absent)"
    try:
        import docker

        docker.from_env().ping()
        return True, ""
    except Exception as exc:
        return False, f"Docker engine not reachable: {type(exc).__name__}"
