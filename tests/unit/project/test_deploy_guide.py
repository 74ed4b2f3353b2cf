"""docs/deploy.md is true to template.yaml and samconfig.toml (issue 17)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from meterbridge_dev.stack.tables import load_template

ROOT = Path(__file__).resolve().parents[3]
GUIDE = (ROOT / "docs" / "deploy.md").read_text()
TEMPLATE = load_template(ROOT / "template.yaml")
SAMCONFIG = tomllib.loads((ROOT / "samconfig.toml").read_text())
ENVS = {"default": "dev", "staging": "staging", "prod": "prod"}


def ssm_parameters() -> dict[str, str]:
    """Template parameter -> its default, for every parameter an ``ssm`` ARN references."""
    text = (ROOT / "template.yaml").read_text()
    referenced = set(re.findall(r":ssm:[^\n]*:parameter\$\{(\w+)\}", text))
    params = TEMPLATE["Parameters"]
    return {name: params[name]["Default"] for name in referenced}


def overrides(env: str) -> dict[str, str]:
    line = SAMCONFIG[env]["deploy"]["parameters"]["parameter_overrides"]
    return dict(pair.split("=", 1) for pair in line.split())


def test_every_ssm_parameter_the_template_reads_is_in_the_guide_per_environment() -> None:
    # Given every SSM parameter the template references
    params = ssm_parameters()
    assert len(params) == 6, params  # five secrets and the NATS password

    for name, default in params.items():
        secret = default.removeprefix("/meterbridge/dev/")
        # Then its default is the dev name, the guide creates it per environment,
        # and lists it among the parameters
        assert default == f"/meterbridge/dev/{secret}", (name, default)
        assert f"--name /meterbridge/$ENV/{secret}" in GUIDE, secret
        assert f"`{name}`" in GUIDE, name
        # And each samconfig environment passes its own name
        for section, env in ENVS.items():
            assert overrides(section).get(name) == f"/meterbridge/{env}/{secret}", (section, name)


def test_the_guide_names_the_real_dockerfile_and_generates_the_random_secrets() -> None:
    # Given the streaming Dockerfile the guide names
    paths = set(re.findall(r"-f (\S*Dockerfile)", GUIDE))

    # Then it exists, and the pepper and the stream-token secret are generated
    assert paths and all((ROOT / p).is_file() for p in paths), paths
    for secret in ("key-pepper", "stream-token-secret"):
        block = GUIDE[GUIDE.index(f"/meterbridge/$ENV/{secret}") :][:200]
        assert "secrets.token_urlsafe" in block, secret


def test_reserved_concurrency_for_the_flush_and_the_webhook() -> None:
    # Given the two functions the production checklist asks to reserve
    resources = TEMPLATE["Resources"]
    for lid, param in (
        ("OpenMeterFlushFunction", "FlushReservedConcurrency"),
        ("StripeWebhookFunction", "WebhookReservedConcurrency"),
    ):
        # Then each reserves its parameter's value (or nothing when it is 0)
        reserved = resources[lid]["Properties"]["ReservedConcurrentExecutions"]
        assert reserved["Fn::If"][1] == {"Ref": param}, reserved
        assert int(TEMPLATE["Parameters"][param]["Default"]) > 0
        assert f"`{param}`" in GUIDE
