"""Where a FastAPI handler's import time goes, component by component.

Each sample is a fresh interpreter that imports the handler's modules one group at a time, in
dependency order, and reports the CPU time of each group (CPU rather than wall time, so the
split is steadier on a shared machine; ``python -m bench.cold_start`` gives the wall-time
figures and the ratios). A module a group lists but the handler never loads is skipped.

    python -m bench.cold_start.breakdown [--runs 9] [--root DIR] [--handlers usage_api ...]

``--root`` measures another checkout (e.g. ``git archive <commit> shared functions | tar -x``)
to compare before and after; ``--root`` and the current tree alternate when both are given.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP = "<handler module>"
TABLE_VARS = ("TENANTS_TABLE", "EVENTS_TABLE", "USAGE_TABLE", "IDEMPOTENCY_TABLE")
# Dependency order: a group's figure is what it adds to the groups above it.
GROUPS: dict[str, tuple[str, ...]] = {
    "fastapi + mangum": ("fastapi", "mangum"),
    "Powertools (Logger, Metrics)": (
        "aws_lambda_powertools",
        "aws_lambda_powertools.logging.correlation_paths",
        "aws_lambda_powertools.utilities.typing",
    ),
    "pydantic-settings": ("pydantic_settings",),
    # Installed by the handler's init before any route module: called here in the same place.
    "runtime (FastAPI v1 probe, tracer)": (
        "install:meterbridge.runtime.fastapi_probe",
        "meterbridge.runtime.tracer",
    ),
    "errors, observability": ("meterbridge.errors", "meterbridge.observability"),
    "Settings class": ("meterbridge.settings",),
    "models.tenant": ("meterbridge.models.tenant",),
    "models.usage": ("meterbridge.models.usage",),
    "models.cloudevent": ("meterbridge.models.cloudevent",),
    "plans": ("meterbridge.plans",),
    "DAL, bus, logic": (
        "meterbridge.dal.dynamo",
        "meterbridge.dal.tenants",
        "meterbridge.dal.keys",
        "meterbridge.logic.keys.format",
        "meterbridge.logic.auth",
        "meterbridge.dal.outbox",
        "meterbridge.dal.events",
        "meterbridge.bus.publisher",
        "meterbridge.logic.ingest",
        "meterbridge.logic.usage_query",
        "meterbridge.adapters.stripe_billing",
        "meterbridge.logic.tenants.provisioning",
        "meterbridge.logic.tenants.lifecycle",
        "meterbridge.logic.deadletters",
    ),
    "pydantic.v1 (FastAPI's v1 check)": ("pydantic.v1",),
    "routes + app": (
        "meterbridge.api.errors",
        "meterbridge.api.admin_auth",
        "meterbridge.api.tenant_auth",
        "meterbridge.api.usage",
        "meterbridge.api.admin_deadletters",
        "meterbridge.api.admin",
        APP,
    ),
}

PROBE = r"""
import importlib, importlib.util, json, sys, time
out = []
for step in json.loads(sys.argv[1]):
    t0 = time.process_time()
    if step.startswith("install:"):
        importlib.import_module(step.removeprefix("install:")).install()
    elif step.endswith(".py"):
        spec = importlib.util.spec_from_file_location("handler_under_test", step)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        importlib.import_module(step)
    out.append((time.process_time() - t0) * 1000)
print(json.dumps(out))
"""

LOADED = r"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("handler_under_test", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(json.dumps(sorted(sys.modules)))
"""


def _env(root: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(root / "shared"),
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "PYTHONDONTWRITEBYTECODE": "",
        # The handlers read their settings at init: table names have no defaults.
        **{v: f"bench-{v.lower()}" for v in TABLE_VARS},
    }


def _run(root: Path, code: str, arg: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code, arg],
        capture_output=True,
        text=True,
        env=_env(root),
        cwd=root,
        check=True,
        timeout=120,
    )
    return out.stdout.strip().splitlines()[-1]


def plan(root: Path, handler: str) -> list[tuple[str, str]]:
    """(group, step) pairs for the modules this handler loads, in dependency order."""
    app = str(root / "functions" / handler / "app.py")
    loaded = set(json.loads(_run(root, LOADED, app)))
    steps = []
    for group, modules in GROUPS.items():
        for module in modules:
            if module == APP:
                steps.append((group, app))
            elif module.removeprefix("install:") in loaded:
                steps.append((group, module))
    return steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--root", type=Path, help="another checkout to compare with")
    parser.add_argument("--handlers", nargs="+", default=["usage_api", "tenant_admin"])
    args = parser.parse_args()
    trees = {"this tree": ROOT}
    if args.root:
        trees = {str(args.root): args.root.resolve(), **trees}
    for handler in args.handlers:
        plans = {name: plan(root, handler) for name, root in trees.items()}
        samples: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
        for i in range(args.runs + 1):
            for name, root in trees.items():
                steps = plans[name]
                times = json.loads(_run(root, PROBE, json.dumps([s for _, s in steps])))
                if i == 0:
                    continue  # the first sample writes any missing bytecode
                per_group: dict[str, float] = {}
                for (group, _), ms in zip(steps, times, strict=True):
                    per_group[group] = per_group.get(group, 0.0) + ms
                per_group["total"] = sum(times)
                for group, ms in per_group.items():
                    samples[name].setdefault(group, []).append(ms)
        print(f"\n{handler}: CPU ms per component, median of {args.runs} fresh processes")
        print(f"{'component':40}" + "".join(f"{name[-14:]:>16}" for name in trees))
        for group in [*GROUPS, "total"]:
            cells = []
            for name in trees:
                values = samples[name].get(group)
                cells.append(f"{statistics.median(values):16.1f}" if values else f"{'-':>16}")
            print(f"{group:40}" + "".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
