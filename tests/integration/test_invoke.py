"""``meterbridge invoke``: one handler in-process with an event file, as sam local invoke."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_invoke_runs_the_flush_handler_with_the_scheduled_event(aws: dict[str, str]) -> None:
    # Given tables on the moto server and an empty outbox
    # When the flush is invoked from the command line with the EventBridge fixture
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "meterbridge_dev.cli.main",
            "invoke",
            "openmeter_flush",
            "--event",
            "events/eventbridge-scheduled.json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # Then it prints the handler's JSON result: nothing to send
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout[out.stdout.index("{") :])
    assert result["sent"] == 0 and result["remaining"] == 0


def test_invoke_refuses_an_unknown_function() -> None:
    # When an unknown function is named / Then a clear usage error, not a traceback
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "meterbridge_dev.cli.main",
            "invoke",
            "nope",
            "--event",
            "events/eventbridge-scheduled.json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "unknown function" in out.stderr and "Traceback" not in out.stderr
