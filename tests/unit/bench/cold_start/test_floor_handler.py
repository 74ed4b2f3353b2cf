"""The bench's floor is what it claims: FastAPI + Mangum + a botocore client, nothing else.

bench/cold_start reads the floor's ratio to the baseline as the lowest a FastAPI + Mangum +
botocore handler can reach, so the floor must not load boto3, Powertools, pydantic-settings or
any of meterbridge; the floor with the runtime measures may load those measures only.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
PROBE = r"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("floor_under_test", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(json.dumps({"modules": sorted(sys.modules), "handler": callable(module.lambda_handler)}))
"""
NOT_IN_THE_FLOOR = ("boto3", "s3transfer", "aws_lambda_powertools", "pydantic_settings")


def _import(handler: str) -> tuple[list[str], bool]:
    """The modules a fresh interpreter holds after importing the handler, and if it has one."""
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'shared'}{os.pathsep}{ROOT}",
        "AWS_DEFAULT_REGION": "us-east-1",
        "BASELINE_TABLE": "floor-test",
    }
    path = ROOT / "bench/cold_start" / handler
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(path)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return [str(m) for m in result["modules"]], bool(result["handler"])


@pytest.mark.parametrize(
    ("handler", "ours"),
    [("floor_handler.py", set()), ("floor_measured_handler.py", {"meterbridge"})],
)
def test_the_floor_loads_fastapi_mangum_and_botocore_and_nothing_of_ours(
    handler: str, ours: set[str]
) -> None:
    # Given a floor handler imported in a fresh interpreter, as the bench's probe does
    modules, has_handler = _import(handler)
    # When its modules are listed
    top = {m.split(".")[0] for m in modules}
    # Then the stack is there, with its botocore client built, and a handler to invoke
    assert {"fastapi", "mangum", "botocore"} <= top
    assert "botocore.client" in modules
    assert has_handler is True
    # And none of what the product adds on top of that stack
    assert sorted(top & set(NOT_IN_THE_FLOOR)) == []
    # And of meterbridge at most its runtime measures (in the measured floor only)
    assert top & {"meterbridge"} == ours
    mine = [m for m in modules if m.split(".")[0] == "meterbridge"]
    assert [m for m in mine if m != "meterbridge" and not m.startswith("meterbridge.runtime")] == []
