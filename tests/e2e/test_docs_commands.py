"""The commands of docs/tenants.md, docs/usage.md and docs/flush.md work as written against a
fresh ``meterbridge dev`` (issue 17).

Each doc's ``sh`` blocks run in bash (``set -euo pipefail``) with the ``meterbridge`` of this
checkout first on PATH; the one substitution is the stack's URL for ``MB=http://127.0.0.1:8000``
(the test's stack listens on a free port). The stack runs as docs/flush.md asks for its
dead-letter walk-through (``--openmeter-reject evt-bad``), with a short flush interval.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.devstack import ROOT, Dev, running_dev

DOC_URL = "MB=http://127.0.0.1:8000"
TOKEN = "dev-admin-token"


def sh_blocks(doc: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", (ROOT / "docs" / doc).read_text(), re.S)


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    tmp = tmp_path_factory.mktemp("docs-dev")
    with running_dev(
        tmp,
        "--flush-interval",
        "1",
        "--openmeter-reject",
        "evt-bad",
        env={"METERBRIDGE_ADMIN_TOKEN": TOKEN},
    ) as stack:
        yield stack


def run_doc(dev: Dev, doc: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    blocks = sh_blocks(doc)
    assert blocks, f"{doc} has no sh block"
    script = "set -euo pipefail\n" + "\n".join(b.replace(DOC_URL, f"MB={dev.base}") for b in blocks)
    env = {**dev.env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{dev.env['PATH']}"}
    return subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_tenants_doc_commands_work_as_written(dev: Dev, tmp_path: Path) -> None:
    # When the operator runs docs/tenants.md's commands
    done = run_doc(dev, "tenants.md", tmp_path)

    # Then every one succeeded, with tables and the signed test webhook applied
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "expired" in done.stdout  # the rotated key, listed after a 0 s grace
    assert "invoice.paid evt_test_" in done.stdout and "-> 200" in done.stdout
    assert "Traceback" not in done.stderr


def test_usage_doc_commands_work_as_written(dev: Dev, tmp_path: Path) -> None:
    # When a tenant's app runs docs/usage.md's commands
    done = run_doc(dev, "usage.md", tmp_path)

    # Then the answers are the ones the doc states
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert '{"accepted":2,"duplicates":0}' in done.stdout
    assert '{"accepted":0,"duplicates":1}' in done.stdout
    assert done.stdout.rstrip().endswith("400")
    assert '"api_calls"' in done.stdout


def test_flush_doc_commands_work_as_written(dev: Dev, tmp_path: Path) -> None:
    # When the operator walks through docs/flush.md's dead letter and backfill
    done = run_doc(dev, "flush.md", tmp_path)

    # Then the refused event became a dead letter, was retried, and the backfill accepted
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "evt-bad" in done.stdout
    assert '"accepted": 1' in done.stdout
    # And the flush's Prometheus metrics moved on the stack's /metrics
    metrics = httpx.get(f"{dev.base}/metrics", timeout=10).text
    sent = re.search(r"^meterbridge_openmeter_events_sent_total (\S+)$", metrics, re.M)
    errors = re.search(r"^meterbridge_openmeter_flush_errors_total (\S+)$", metrics, re.M)
    assert sent and float(sent.group(1)) >= 1, metrics[:2000]
    assert errors and float(errors.group(1)) >= 1


def test_make_dev_takes_a_port() -> None:
    # When make is asked what `make dev PORT=8010` runs
    done = subprocess.run(
        ["make", "-n", "dev", "PORT=8010"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )

    # Then it is meterbridge dev on that port
    assert done.returncode == 0, done.stderr
    assert "meterbridge dev --port 8010" in done.stdout


def test_readme_try_it_waits_for_readiness_and_its_swagger_page_answers(dev: Dev) -> None:
    # Given the README's "Try it"
    readme = (ROOT / "README.md").read_text()
    try_it = readme[readme.index("## Try it") :][:2000]

    # When the Swagger page it names is fetched from the stack
    docs_page = httpx.get(f"{dev.base}/docs", timeout=10)

    # Then it waits on /health/ready before the first call, and the page is served
    assert "until curl -sf localhost:8000/health/ready" in try_it
    assert "http://127.0.0.1:8000/docs" in try_it
    assert docs_page.status_code == 200 and "swagger" in docs_page.text.lower()
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert "## [Unreleased]" in (ROOT / "CHANGELOG.md").read_text()
