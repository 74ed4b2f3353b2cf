"""Operating meterbridge from the CLI (issue 17): SigV4 against ``meterbridge dev --admin-auth
iam``, the state file, and one-line errors."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.devstack import ROOT, base_env, running_dev

AKID = "AKIALOCALTESTOPERATOR"
SECRET = "local-operator-secret-not-a-real-one"


@pytest.fixture
def iam_credentials(tmp_path: Path) -> Path:
    path = tmp_path / "iam.json"
    path.write_text(
        json.dumps(
            [
                {
                    "access_key_id": AKID,
                    "secret_access_key": SECRET,
                    "arn": "arn:aws:iam::123456789012:user/operator",
                }
            ]
        )
    )
    return path


def signer(akid: str = AKID, secret: str = SECRET) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": akid, "AWS_SECRET_ACCESS_KEY": secret}


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def test_operator_provisions_issues_and_reads_status_with_sigv4(
    tmp_path: Path, iam_credentials: Path
) -> None:
    # Given meterbridge dev verifying SigV4 against a local list of credentials
    with running_dev(
        tmp_path, "--admin-auth", "iam", "--iam-credentials", str(iam_credentials)
    ) as dev:
        state = json.loads(dev.state_file.read_text())

        # When an operator with allowed credentials provisions, issues a key and reads status
        created = dev.cli_json(
            "tenants", "create", "--name", "Acme", "--email", "ops@acme.example", env=signer()
        )
        tenant_id = created["tenant"]["tenant_id"]
        issued = dev.cli_json("keys", "issue", tenant_id, env=signer())
        shown = dev.cli_json("tenants", "show", tenant_id, env=signer())
        keys = dev.cli_json("keys", "list", tenant_id, env=signer())
        status = dev.cli("status", "--json", env=signer())

        # And with a wrong secret, then with credentials not in the list
        wrong = dev.cli("tenants", "list", env=signer(secret="not-the-secret"))
        unknown = dev.cli("tenants", "list", env=signer(akid="AKIAUNKNOWNCALLER"))

    # Then the state file named the stack and its auth mode
    assert state["url"] == dev.base and state["admin_auth"] == "iam"
    assert {"dynamodb", "nats", "openmeter", "stripe", "tables"} <= set(state)
    # And the signed calls did what they say, with a Stripe customer from the stand-in
    assert created["tenant"]["stripe_customer_id"].startswith("cus_")
    assert issued["secret"].startswith("mb_test_")
    assert shown["tenant_id"] == tenant_id and shown["status"] == "active"
    assert {k["key_id"] for k in keys} == {created["api_key"]["key_id"], issued["key_id"]}
    assert status.returncode in (0, 1), status.stderr
    assert json.loads(status.stdout)["outbox"]["pending"] >= 0
    # And the bad signatures are a clear 403, in one line
    assert "403" in one_line_error(wrong) and "signature" in one_line_error(wrong)
    assert "403" in one_line_error(unknown)
    assert "security token included in the request is invalid" in one_line_error(unknown)
    # And the state file is gone once the stack stopped
    assert not dev.state_file.exists()


def test_one_line_errors_stack_down_bad_token_unknown_tenant(tmp_path: Path) -> None:
    # Given no stack running
    env = base_env(tmp_path)
    down = subprocess.run(
        [sys.executable, "-m", "meterbridge_dev.cli.main", "tenants", "list"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    status_down = subprocess.run(
        [sys.executable, "-m", "meterbridge_dev.cli.main", "status"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    # When the stack runs with an admin token
    with running_dev(tmp_path, env={"METERBRIDGE_ADMIN_TOKEN": "right-token"}) as dev:
        bad_token = dev.cli("tenants", "list", env={"METERBRIDGE_ADMIN_TOKEN": "wrong"})
        unknown = dev.cli(
            "tenants", "show", "t_0000000000000000", env={"METERBRIDGE_ADMIN_TOKEN": "right-token"}
        )
        table = dev.cli("tenants", "list", env={"METERBRIDGE_ADMIN_TOKEN": "right-token"})
        # a stale state file (its process is gone) is "not running" too
        pid_file = json.loads(dev.state_file.read_text())
    stale = tmp_path / "stale.json"
    stale.write_text(json.dumps({**pid_file, "pid": 2**22 + 12345}))
    stale_run = subprocess.run(
        [sys.executable, "-m", "meterbridge_dev.cli.main", "tenants", "list"],
        cwd=ROOT,
        env={**env, "METERBRIDGE_STATE_FILE": str(stale)},
        capture_output=True,
        text=True,
        timeout=60,
    )

    # Then each failure is one line naming what to do, with exit status 1
    assert "local stack is not running" in one_line_error(down)
    assert "meterbridge dev" in one_line_error(down)
    assert "local stack is not running" in one_line_error(status_down)
    assert "401" in one_line_error(bad_token) and "METERBRIDGE_ADMIN_TOKEN" in bad_token.stderr
    assert "404" in one_line_error(unknown) and "t_0000000000000000" in unknown.stderr
    assert "local stack is not running" in one_line_error(stale_run)
    # And success is a table for people
    assert table.returncode == 0 and "items" in table.stdout and "{" not in table.stdout


def test_dev_refuses_a_busy_port_in_one_line(tmp_path: Path) -> None:
    # Given a port something else listens on
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]

        # When meterbridge dev is asked for it
        done = subprocess.run(
            [sys.executable, "-m", "meterbridge_dev.cli.main", "dev", "--port", str(port)],
            cwd=ROOT,
            env=base_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )

    # Then one line names the port and --port, and nothing was started
    line = one_line_error(done)
    assert str(port) in line and "--port" in line
    assert "stopping" not in done.stdout


def test_operator_drives_a_deployed_stack_found_by_its_cloudformation_outputs(
    tmp_path: Path, iam_credentials: Path, moto_server
) -> None:
    # Given an IAM-verifying stack whose DynamoDB is an outside one (no moto of its own) ...
    import boto3

    with running_dev(
        tmp_path,
        "--admin-auth",
        "iam",
        "--iam-credentials",
        str(iam_credentials),
        env={"AWS_ENDPOINT_URL_DYNAMODB": moto_server.url},
    ) as dev:
        state = json.loads(dev.state_file.read_text())
        banner = dev.log.read_text()
        # ... published as a CloudFormation stack's outputs, as `sam deploy` leaves them
        tables = state["tables"]
        outputs = {
            "HttpApiUrl": dev.base,
            "TenantsTableName": tables["tenants"],
            "EventsTableName": tables["events"],
            "UsageTableName": tables["usage"],
            "IdempotencyTableName": tables["idempotency"],
        }
        template = {
            "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
            "Outputs": {k: {"Value": v} for k, v in outputs.items()},
        }
        cfn = boto3.client("cloudformation", endpoint_url=moto_server.url, region_name="us-east-1")
        stack = f"mb-e2e-{tmp_path.name[-8:]}".replace("_", "-")
        cfn.create_stack(StackName=stack, TemplateBody=json.dumps(template))
        aws = {
            **signer(),
            "AWS_ENDPOINT_URL_CLOUDFORMATION": moto_server.url,
            "AWS_ENDPOINT_URL_DYNAMODB": moto_server.url,
            "AWS_DEFAULT_REGION": "us-east-1",
            # the local stack's state file is not what finds this one
            "METERBRIDGE_STATE_FILE": str(tmp_path / "elsewhere.json"),
        }

        # When the operator names the stack, not a URL
        created = dev.cli_json(
            "tenants", "create", "--name", "Acme", "--email", "a@acme.example",
            "--stack-name", stack, env=aws,
        )  # fmt: skip
        listed = dev.cli_json("tenants", "list", "--stack-name", stack, env=aws)
        status = dev.cli("status", "--json", "--stack-name", stack, env=aws)
        missing = dev.cli("tenants", "list", "--stack-name", "no-such-stack", env=aws)

    # Then the stack's own DynamoDB was used, with no moto started
    assert state["dynamodb"] == moto_server.url
    assert "embedded moto server" not in banner and "AWS_ENDPOINT_URL_DYNAMODB" in banner
    # And the CLI found the API in the outputs and signed its calls
    assert [t["tenant_id"] for t in listed["items"]] == [created["tenant"]["tenant_id"]]
    assert status.returncode in (0, 1) and "outbox" in json.loads(status.stdout)
    assert "no-such-stack" in one_line_error(missing)


def test_samconfig_environments_name_the_stacks() -> None:
    from meterbridge_dev.cli.target import samconfig_stack_name

    # Then each environment's stack name comes from samconfig.toml
    assert samconfig_stack_name(None) == "meterbridge"
    assert samconfig_stack_name("dev") == "meterbridge"
    assert samconfig_stack_name("prod") == "meterbridge-prod"
    assert samconfig_stack_name("staging") == "meterbridge-staging"


def test_console_has_one_line_per_request_and_flush_and_no_borrowed_lambda_context(
    tmp_path: Path,
) -> None:
    import time

    # Given the stack logging JSON, flushing twice a second
    with running_dev(
        tmp_path,
        "--log-format",
        "json",
        "--flush-interval",
        "0.5",
        env={"METERBRIDGE_ADMIN_TOKEN": "tok"},
    ) as dev:
        # When tenants are provisioned while the flush runs
        for n in range(3):
            dev.cli_json(
                "tenants", "create", "--name", f"T{n}", "--email", f"t{n}@x.example",
                env={"METERBRIDGE_ADMIN_TOKEN": "tok"},
            )  # fmt: skip
        deadline = time.monotonic() + 120
        while dev.log.read_text().count('"message": "flush finished"') < 3:
            assert time.monotonic() < deadline, dev.log.read_text()[-3000:]
            time.sleep(0.2)
        text = dev.log.read_text()

    records = []
    for line in text.splitlines():
        if line.startswith("{") and '"_aws"' not in line:
            records.append(json.loads(line))
    provisioned = [r for r in records if r.get("message") == "tenant provisioned"]
    flushes = [r for r in records if r.get("message") == "flush finished"]
    requests = [r for r in records if r.get("kind") == "request" and r["path"] == "/admin/tenants"]

    # Then a request's own lines carry no Lambda context, the flush's do
    assert len(provisioned) == 3
    assert all("function_name" not in r and "function_request_id" not in r for r in provisioned)
    assert all(r["function_name"] == "meterbridge-openmeter_flush" for r in flushes)
    # And there is one line per request and one per flush run
    assert [r["status"] for r in requests] == [201, 201, 201]
    assert sum(1 for r in records if r.get("kind") == "flush") >= 3
    # And the banner said how admin auth, the port and the logs are set up
    assert "Admin      token set" in text and "Logs       this console" in text
    assert "API docs" in text and "/docs" in text
