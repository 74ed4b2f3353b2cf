"""The Lambda layer as ``sam build`` builds it holds only what a Lambda runs.

SAM builds ``SharedLayer`` (``ContentUri: shared/``) offline, as ``make sam`` does; the built
``python/`` directory must hold neither the dev kit, nor the streaming service, nor uvicorn or
prometheus-client, and every module of ``python/meterbridge`` must be one that some Lambda
(``functions/*/app.py``) can import, directly or not (deferred imports count).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.imports import graph, unreachable

ROOT = Path(__file__).resolve().parents[2]
SAM = ROOT / ".tools" / "sam" / "bin" / "sam"
FORBIDDEN = ("meterbridge_dev", "meterbridge_streaming", "uvicorn", "prometheus_client")


def layer_problems(python_dir: Path, functions: list[Path]) -> list[str]:
    """What the built layer's ``python/`` holds that it must not."""
    problems = [
        f"{name} is in the layer"
        for name in FORBIDDEN
        if (python_dir / name).exists() or (python_dir / f"{name}.py").exists()
    ]
    problems += [
        f"{dist.name} is in the layer"
        for dist in python_dir.glob("*.dist-info")
        if dist.name.split("-")[0].lower().replace("_", "-") in ("uvicorn", "prometheus-client")
    ]
    edges = graph(python_dir, "meterbridge")
    problems += [f"{module} is imported by no Lambda" for module in unreachable(edges, functions)]
    return problems


@pytest.fixture(scope="module")
def built_layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not SAM.exists():
        subprocess.run(["bash", "scripts/install-sam.sh"], cwd=ROOT, check=True, timeout=900)
    build_dir = tmp_path_factory.mktemp("sam-build")
    # SAM's python3.12 builder needs a python3.12 on PATH (make sam does the same).
    python_bin = Path(sys._base_executable).parent  # type: ignore[attr-defined]
    env = {
        **os.environ,
        "SAM_CLI_TELEMETRY": "0",
        "AWS_DEFAULT_REGION": "us-east-1",
        "PATH": f"{python_bin}{os.pathsep}{os.environ['PATH']}",
    }
    command = [str(SAM), "build", "SharedLayer", "--template", "template.yaml"]
    subprocess.run(
        [*command, "--build-dir", str(build_dir)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=900,
    )
    return build_dir / "SharedLayer" / "python"


@pytest.mark.slow
def test_the_built_layer_holds_only_what_a_lambda_runs(built_layer: Path) -> None:
    # Given the layer as sam build builds it, and the four Lambdas' entry points
    functions = sorted(ROOT.glob("functions/*/app.py"))

    # When its contents are checked
    problems = layer_problems(built_layer, functions)

    # Then it holds the layer package and its runtime, and nothing else of ours
    assert len(functions) == 4
    assert (built_layer / "meterbridge" / "api" / "usage.py").is_file()
    assert (built_layer / "meterbridge" / "plans.json").is_file()
    assert (built_layer / "fastapi").is_dir() and (built_layer / "boto3").is_dir()
    assert not problems, problems


def test_the_check_sees_what_must_not_be_in_a_layer(tmp_path: Path) -> None:
    # Given a layer that holds uvicorn, the dev kit and a module no entry point imports
    python_dir = tmp_path / "python"
    package = python_dir / "meterbridge"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "used.py").write_text("import json\n")
    (package / "stray.py").write_text("")
    (python_dir / "uvicorn").mkdir()
    (python_dir / "prometheus_client-0.26.0.dist-info").mkdir()
    (python_dir / "meterbridge_dev").mkdir()
    entry = tmp_path / "app.py"
    entry.write_text("from meterbridge import used\n")

    # When it is checked
    problems = layer_problems(python_dir, [entry])

    # Then each is reported, and the imported module is not
    assert sorted(problems) == [
        "meterbridge.stray is imported by no Lambda",
        "meterbridge_dev is in the layer",
        "prometheus_client-0.26.0.dist-info is in the layer",
        "uvicorn is in the layer",
    ]
