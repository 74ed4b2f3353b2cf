"""The local stack's state file: where ``meterbridge dev`` listens, read by the other commands.

``meterbridge dev`` writes it once everything is up and removes it on exit. A file whose
process is gone (a ``kill -9``) counts as "not running". The path is ``METERBRIDGE_STATE_FILE``
or ``$XDG_STATE_HOME/meterbridge/dev.json`` (``~/.local/state/meterbridge/dev.json``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def state_path() -> Path:
    explicit = os.environ.get("METERBRIDGE_STATE_FILE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "meterbridge" / "dev.json"


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def write_state(state: dict[str, Any]) -> Path:
    path = state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # It holds the local stack's secrets (webhook secret, pepper): the owner's only.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps({**state, "pid": os.getpid()}, indent=2))
    tmp.replace(path)
    return path


def read_state() -> dict[str, Any] | None:
    """The running stack's state, or None when no ``meterbridge dev`` is running."""
    path = state_path()
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not _alive(int(state.get("pid", 0) or 0)):
        return None
    return state


def remove_state() -> None:
    path = state_path()
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if isinstance(state, dict) and state.get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def use_local_stack() -> dict[str, Any] | None:
    """Point this process at the running local stack's services, as its own functions are.

    For the commands that run meterbridge code in-process (``invoke``, ``backfill``,
    ``stripe reconcile``). Without a running stack nothing changes: the environment decides.
    """
    state = read_state()
    if state is None:
        return None
    os.environ.update({k: str(v) for k, v in (state.get("env") or {}).items()})
    # moto takes any credentials; none are stored in the state file.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    from meterbridge.dal import dynamo
    from meterbridge.settings import get_settings

    get_settings.cache_clear()
    dynamo.reset_clients()
    return state
