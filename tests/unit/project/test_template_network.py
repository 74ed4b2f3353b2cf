"""template.yaml's exposure: the HTTP API's throttle, NATS credentials and TLS, streaming ingress.

Each test reads the template as data and fails on the setting an outside review attacked: a
stage bucket below the plans, NATS open to whoever reaches it, port 8080 open to a /8.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from meterbridge_dev.stack.tables import load_template

ROOT = Path(__file__).resolve().parents[3]
TEMPLATE = load_template(ROOT / "template.yaml")
RESOURCES: dict[str, dict[str, Any]] = TEMPLATE["Resources"]
PARAMETERS: dict[str, dict[str, Any]] = TEMPLATE["Parameters"]
PLANS = list(
    json.loads((ROOT / "shared" / "meterbridge" / "plans.json").read_text())["plans"].values()
)


def props(logical_id: str) -> dict[str, Any]:
    return RESOURCES[logical_id]["Properties"]


def containers() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for c in props("StreamingTaskDefinition")["ContainerDefinitions"]:
        if "Fn::If" in c:
            c = c["Fn::If"][1]
        found[c["Name"]] = c
    return found


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["Name"]: e["Value"] for e in container.get("Environment", [])}


def secret_parameter(container: dict[str, Any], name: str) -> str | None:
    for secret in container.get("Secrets", []):
        if secret["Name"] == name:
            return str(secret["ValueFrom"]["Fn::Sub"])
    return None


def resolve(value: Any) -> Any:
    """A parameter's default for ``{"Ref": P}``; other values as they are."""
    if isinstance(value, dict) and "Ref" in value and value["Ref"] in PARAMETERS:
        return PARAMETERS[value["Ref"]]["Default"]
    return value


# -- HTTP API throttling ---------------------------------------------------------------------


def test_stage_throttle_sits_above_the_sum_of_plan_limits() -> None:
    # Given the plans' per-tenant limits, one tenant of each plan at its limit together
    plan_sum_per_s = sum(p["requests_per_minute"] for p in PLANS) / 60

    # When the HTTP API's default route throttle is read (default and the lowest allowed)
    route = props("HttpApi")["DefaultRouteSettings"]
    rate, burst = route["ThrottlingRateLimit"], route["ThrottlingBurstLimit"]

    # Then neither the default nor any allowed value is below the plans: only meterbridge's
    # per-tenant limits refuse a tenant; and the values stay within the account's quota
    for setting in (rate, burst):
        name = setting["Ref"]
        assert PARAMETERS[name]["Type"] == "Number"
        assert PARAMETERS[name]["MinValue"] >= math.ceil(plan_sum_per_s), name
        assert PARAMETERS[name]["Default"] >= PARAMETERS[name]["MinValue"], name
    assert PARAMETERS[rate["Ref"]]["MaxValue"] <= 10_000
    assert PARAMETERS[burst["Ref"]]["MaxValue"] <= 5_000


def test_admin_routes_have_a_bucket_of_their_own() -> None:
    # Given the stage's route settings
    routes = props("HttpApi").get("RouteSettings", {})

    # Then the admin route (registered by the admin function) has its own, smaller limit
    admin = props("TenantAdminFunction")["Events"]["Admin"]["Properties"]
    key = f"{admin['Method']} {admin['Path']}"
    assert key in routes
    assert (
        0
        < routes[key]["ThrottlingRateLimit"]
        < resolve(props("HttpApi")["DefaultRouteSettings"]["ThrottlingRateLimit"])
    )


# -- NATS: credentials and TLS ---------------------------------------------------------------


def test_sidecar_listens_on_loopback_and_requires_the_password_from_ssm() -> None:
    # Given the NATS sidecar
    nats = containers()["nats"]
    script = " ".join(nats["Command"])

    # Then it binds the task's loopback only (client and monitoring ports), publishes no
    # port, and asks for the user and the password ECS injects from the SSM parameter
    assert "listen: 127.0.0.1:4222" in script
    assert "http: 127.0.0.1:8222" in script
    assert "authorization { user: $NATS_USER, password: $NATS_PASSWORD }" in script
    assert "PortMappings" not in nats
    assert env_of(nats)["NATS_USER"] == {"Ref": "NatsUser"}
    assert "${NatsPasswordParameter}" in (secret_parameter(nats, "NATS_PASSWORD") or "")


def test_streaming_connects_with_credentials_and_tls_to_a_cluster() -> None:
    # Given the streaming container
    streaming = containers()["streaming"]
    env = env_of(streaming)

    # Then it sends the user and password, and uses TLS whenever NATS is not the sidecar
    assert env["NATS_USER"] == {"Ref": "NatsUser"}
    assert "${NatsPasswordParameter}" in (secret_parameter(streaming, "NATS_PASSWORD") or "")
    assert env["NATS_TLS"] == {"Fn::If": ["UseNatsSidecar", "false", "true"]}
    # ECS may read that parameter (and the others the task is given), nothing else
    statement = props("StreamingExecutionRole")["Policies"][0]["PolicyDocument"]["Statement"][0]
    assert any("${NatsPasswordParameter}" in str(r) for r in statement["Resource"])


def test_an_external_cluster_is_reached_over_tls_only() -> None:
    # Given the NatsServers parameter's pattern
    pattern = re.compile(PARAMETERS["NatsServers"]["AllowedPattern"])

    # Then the sidecar (empty) and tls:// URLs pass; a plaintext nats:// URL does not
    assert pattern.fullmatch("")
    assert pattern.fullmatch("tls://nats-1.internal:4222,tls://nats-2.internal:4222")
    assert not pattern.fullmatch("nats://nats-1.internal:4222")
    assert not pattern.fullmatch("tls://nats-1.internal:4222,nats://nats-2.internal:4222")


def test_lambdas_publish_with_credentials_and_tls() -> None:
    # Given the functions' global environment
    env = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]

    # Then a function that publishes (to a cluster) sends the user, its password from SSM,
    # and uses TLS
    assert env["NATS_USER"] == {"Ref": "NatsUser"}
    assert env["NATS_TLS"] == {"Fn::If": ["LambdaPublishesToNats", "true", "false"]}
    assert env["NATS_PASSWORD_PARAMETER"] == {
        "Fn::If": ["LambdaPublishesToNats", {"Ref": "NatsPasswordParameter"}, ""]
    }


# -- streaming ingress -----------------------------------------------------------------------


def test_streaming_ingress_is_the_load_balancer_only() -> None:
    # Given the streaming tasks' security group
    group = props("StreamingSecurityGroup")
    ingress = group["SecurityGroupIngress"]["Fn::If"]

    # Then the load balancer's security group is the source when given, else an explicit
    # CIDR, else nothing; no default opens port 8080 to a network range
    condition, by_group, fallback = ingress
    assert condition == "HasLoadBalancerSecurityGroup"
    assert by_group == [
        {
            "IpProtocol": "tcp",
            "FromPort": 8080,
            "ToPort": 8080,
            "SourceSecurityGroupId": {"Ref": "StreamingLoadBalancerSecurityGroupId"},
            "Description": "SSE clients through the load balancer",
        }
    ]
    cidr_condition, by_cidr, nothing = fallback["Fn::If"]
    assert cidr_condition == "HasIngressCidr"
    assert [r["CidrIp"] for r in by_cidr] == [{"Ref": "StreamingIngressCidr"}]
    assert [(r["FromPort"], r["ToPort"]) for r in by_cidr] == [(8080, 8080)]
    assert nothing == {"Ref": "AWS::NoValue"}
    assert PARAMETERS["StreamingIngressCidr"]["Default"] == ""
    # 0.0.0.0/0 is refused at deploy time
    rule = TEMPLATE["Rules"]["StreamingIngressIsNotTheInternet"]["Assertions"][0]["Assert"]
    assert rule == {"Fn::Not": [{"Fn::Equals": [{"Ref": "StreamingIngressCidr"}, "0.0.0.0/0"]}]}


def test_streaming_egress_is_https_and_the_nats_cluster_only() -> None:
    # Given the security group's egress rules
    rules = props("StreamingSecurityGroup")["SecurityGroupEgress"]
    plain = [r for r in rules if "Fn::If" not in r]
    conditional = [r["Fn::If"] for r in rules if "Fn::If" in r]

    # Then HTTPS always, NATS's port only with an external cluster, no all-protocol rule
    assert [(r["IpProtocol"], r["FromPort"], r["ToPort"]) for r in plain] == [("tcp", 443, 443)]
    assert len(conditional) == 1
    condition, sidecar, cluster = conditional[0]
    assert condition == "UseNatsSidecar" and sidecar == {"Ref": "AWS::NoValue"}
    assert (cluster["IpProtocol"], cluster["FromPort"], cluster["ToPort"]) == ("tcp", 4222, 4222)
