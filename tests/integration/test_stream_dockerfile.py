"""The streaming Dockerfile cannot be built here (no Docker engine): check its essentials."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "services/streaming/Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_is_multi_stage_non_root_with_healthcheck() -> None:
    # Given the streaming Dockerfile
    instructions = _instructions()

    # When its instructions are read
    stages = [rest for kw, rest in instructions if kw == "FROM"]
    final_stage = instructions[max(i for i, (kw, _) in enumerate(instructions) if kw == "FROM") :]
    users = [rest for kw, rest in final_stage if kw == "USER"]
    copies = " ".join(rest for kw, rest in instructions if kw == "COPY")
    healthcheck = " ".join(rest for kw, rest in final_stage if kw == "HEALTHCHECK")

    # Then: two stages on python:3.12-slim, the runtime copies from the build stage
    assert len(stages) >= 2
    assert all(s.startswith("python:3.12-slim") for s in stages)
    assert any(rest.startswith("--from=build") for kw, rest in final_stage if kw == "COPY")
    # ... it runs as a non-root user
    assert users and users[-1].split(":")[0] not in ("root", "0")
    # ... it installs the layer's and its own requirements, and ships both packages
    assert "shared/requirements.txt" in copies and "shared/meterbridge" in copies
    assert "services/streaming/requirements.txt" in copies
    assert "services/streaming/meterbridge_streaming" in copies
    # ... a healthcheck on /health/live, the ECS port exposed, the entry point run
    assert "/health/live" in healthcheck
    assert ("EXPOSE", "8080") in final_stage
    assert any(kw == "CMD" and "app.py" in rest for kw, rest in final_stage)
