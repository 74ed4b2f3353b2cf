"""Least privilege in template.yaml: every DynamoDB write names what the code writes.

The expected grants below are built from the DAL's own key functions (``tenant_pk``,
``event_pk``, ``counter_pk``, ...), so a changed key format fails here before it fails on AWS.
A write grant without ``dynamodb:LeadingKeys`` (a whole table) fails, and so does any grant
(table, action, key prefix) that no code path of the function needs, or one the code needs that
the template lacks. IAM evaluates a transaction's items one by one as PutItem/UpdateItem, so
the DAL's ``TransactWriteItems`` are covered by the same statements.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

import pytest

from meterbridge.dal import keys as keys_dal
from meterbridge.dal import outbox, usage, webhooks
from meterbridge.dal import provisioning as provisioning_dal
from meterbridge.dal import tenants as tenants_dal
from meterbridge.dal.outbox import segments
from meterbridge.models.cloudevent import (
    ADMIN_SOURCE,
    ALERTS_SOURCE,
    STRIPE_SOURCE,
    usage_source,
)
from meterbridge_dev.stack.tables import load_template

ROOT = Path(__file__).resolve().parents[3]
TEMPLATE = load_template(ROOT / "template.yaml")
RESOURCES: dict[str, dict[str, Any]] = TEMPLATE["Resources"]

WRITE_ACTIONS = {
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:PartiQLInsert",
    "dynamodb:PartiQLUpdate",
    "dynamodb:PartiQLDelete",
}
# SAM policy templates that grant writes on a whole table (and its indexes).
TABLE_WIDE_TEMPLATES = {"DynamoDBCrudPolicy", "DynamoDBWritePolicy"}

TENANT = "t_*"  # models.tenant.TENANT_ID_PATTERN: t_ and 16 hex digits
ANY = "*"

# Partition-key prefixes the code writes, from the DAL's key functions.
KEY_ITEM = keys_dal.key_lookup_pk(ANY)  # KEY#<lookup id>: the key record
PROFILE = tenants_dal.tenant_pk(TENANT)  # TENANT#<id>: profile and key index entries
PROVISION = provisioning_dal.provision_pk(ANY)
CUSTOMER_MAP = "STRIPE#cus_*"  # tenants.put_customer_map: Stripe customer ids are cus_...
USAGE_EVENT = outbox.event_pk(usage_source(TENANT), ANY)
ALERT_EVENT = outbox.event_pk(ALERTS_SOURCE, ANY)
ADMIN_EVENT = outbox.event_pk(ADMIN_SOURCE, ANY)
STRIPE_EVENT = outbox.event_pk(STRIPE_SOURCE, ANY)
ANY_EVENT = outbox.event_pk("//meterbridge/*", ANY)  # every source above
SEGMENT = outbox.SEGMENT_PREFIX + ANY
COUNTER = usage.counter_pk(TENANT, ANY, ANY)  # counters and threshold markers
RATE_WINDOW = f"RATE#{TENANT}#{ANY}"  # usage.take_rate_slot
WEBHOOK_RECORD = webhooks.record_pk(ANY)
FLUSH_RECORD = "FLUSH#*"  # outbox._shard_key (FLUSH#<table>#<shard>), status.LAST_FLUSH_KEY

# (table, action) -> the partition-key patterns the function writes there, and no more.
Needs = dict[tuple[str, str], set[str]]
WRITES: dict[str, Needs] = {
    # Internet-facing: its own tenant's events and counters; on keys, last_used_at only.
    "UsageApiFunction": {
        ("TenantsTable", "UpdateItem"): {KEY_ITEM},
        ("EventsTable", "PutItem"): {USAGE_EVENT, ALERT_EVENT, SEGMENT},
        ("EventsTable", "UpdateItem"): {USAGE_EVENT, ALERT_EVENT},
        ("UsageTable", "PutItem"): {COUNTER},
        ("UsageTable", "UpdateItem"): {COUNTER, RATE_WINDOW},
    },
    "TenantAdminFunction": {
        ("TenantsTable", "PutItem"): {PROFILE, KEY_ITEM, PROVISION, CUSTOMER_MAP},
        ("TenantsTable", "UpdateItem"): {PROFILE, KEY_ITEM, PROVISION, CUSTOMER_MAP},
        ("EventsTable", "PutItem"): {ADMIN_EVENT, SEGMENT},
        # dead-letter retries (any source) and its own events' republish markers
        ("EventsTable", "UpdateItem"): {ANY_EVENT},
    },
    "StripeWebhookFunction": {
        ("TenantsTable", "UpdateItem"): {PROFILE},
        ("EventsTable", "PutItem"): {STRIPE_EVENT, SEGMENT},
        ("EventsTable", "UpdateItem"): {STRIPE_EVENT},
        ("IdempotencyTable", "PutItem"): {WEBHOOK_RECORD},
        ("IdempotencyTable", "DeleteItem"): {WEBHOOK_RECORD},
        # overage billing records beside the counters (dal/billing.py)
        ("UsageTable", "PutItem"): {COUNTER},
        ("UsageTable", "UpdateItem"): {COUNTER},
    },
    "OpenMeterFlushFunction": {
        ("EventsTable", "UpdateItem"): {ANY_EVENT, SEGMENT},
        ("IdempotencyTable", "PutItem"): {FLUSH_RECORD},
        ("IdempotencyTable", "UpdateItem"): {FLUSH_RECORD},
        ("IdempotencyTable", "DeleteItem"): {FLUSH_RECORD},
    },
}
# Updates that may touch these attributes only (dynamodb:Attributes; pk and sk as IAM needs).
ATTRIBUTES: dict[tuple[str, str, str], set[str]] = {
    ("UsageApiFunction", "TenantsTable", "UpdateItem"): {"pk", "sk", "last_used_at"},
    ("UsageApiFunction", "EventsTable", "UpdateItem"): {"pk", "sk", "republish_shard"},
    ("UsageApiFunction", "UsageTable", "PutItem"): {"pk", "sk", "expires_at"},
    ("UsageApiFunction", "UsageTable", "UpdateItem"): {
        "pk",
        "sk",
        "used",
        "group",
        "t",
        "eid",
        "count",
        "expires_at",
    },
    ("TenantAdminFunction", "EventsTable", "UpdateItem"): {
        "pk",
        "sk",
        "status",
        "retried_at",
        "segment",
        "expires_at",
        "dead",
        "republish_shard",
    },
    ("StripeWebhookFunction", "EventsTable", "UpdateItem"): {"pk", "sk", "republish_shard"},
    ("StripeWebhookFunction", "UsageTable", "UpdateItem"): {
        "pk",
        "sk",
        "state",
        "item_id",
        "billed_at",
    },
}
FUNCTIONS = sorted(WRITES)


# -- reading the template ------------------------------------------------------------------


def policies(logical_id: str) -> list[Any]:
    return list(RESOURCES[logical_id]["Properties"].get("Policies", []))


def statements(logical_id: str) -> list[dict[str, Any]]:
    return [s for p in policies(logical_id) if isinstance(p, dict) for s in p.get("Statement", [])]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def tables_of(resource: Any) -> set[str]:
    """The tables a statement's resource names (``!GetAtt T.Arn``, ``!Sub ${T.Arn}/...``)."""
    found: set[str] = set()
    for item in as_list(resource):
        if isinstance(item, dict) and "Fn::GetAtt" in item:
            found.add(item["Fn::GetAtt"][0])
        elif isinstance(item, dict) and "Fn::Sub" in item:
            text = str(item["Fn::Sub"])
            found |= {lid for lid in RESOURCES if "${" + lid + ".Arn}" in text}
        else:
            found.add(str(item))
    return found


def leading_keys(statement: dict[str, Any]) -> set[str]:
    condition = statement.get("Condition") or {}
    return set(
        as_list(condition.get("ForAllValues:StringLike", {}).get("dynamodb:LeadingKeys", []))
    )


def attributes(statement: dict[str, Any]) -> set[str] | None:
    condition = statement.get("Condition") or {}
    names = condition.get("ForAllValues:StringEquals", {}).get("dynamodb:Attributes")
    return None if names is None else set(as_list(names))


def granted_writes(logical_id: str) -> dict[tuple[str, str], set[str]]:
    """(table, action) -> key patterns; ``{"*"}`` for a grant without LeadingKeys."""
    grants: dict[tuple[str, str], set[str]] = {}
    for policy in policies(logical_id):
        for name, args in policy.items() if isinstance(policy, dict) else []:
            if name in TABLE_WIDE_TEMPLATES:
                table = args["TableName"]["Ref"]
                for action in ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"):
                    grants.setdefault((table, action), set()).add("*")
    for statement in statements(logical_id):
        if statement.get("Effect") != "Allow":
            continue
        for action in as_list(statement["Action"]):
            if action not in WRITE_ACTIONS:
                continue
            keys = leading_keys(statement) or {"*"}
            for table in tables_of(statement["Resource"]):
                grants.setdefault((table, action.split(":")[1]), set()).update(keys)
    return grants


def write_statements(logical_id: str) -> list[dict[str, Any]]:
    return [
        s
        for s in statements(logical_id)
        if s.get("Effect") == "Allow" and set(as_list(s["Action"])) & WRITE_ACTIONS
    ]


# -- the tests -----------------------------------------------------------------------------


@pytest.mark.parametrize("logical_id", FUNCTIONS)
def test_no_dynamodb_write_grant_covers_a_whole_table(logical_id: str) -> None:
    # Given the function's policies
    templates = {
        name
        for p in policies(logical_id)
        if isinstance(p, dict)
        for name in p
        if "DynamoDB" in name
    }

    # When its write statements are read
    unscoped = [s for s in write_statements(logical_id) if not leading_keys(s)]

    # Then no SAM template grants table-wide writes, and every write names its key prefixes
    assert not templates & TABLE_WIDE_TEMPLATES, templates
    assert unscoped == []
    for statement in write_statements(logical_id):
        assert "*" not in leading_keys(statement), statement
        assert all("*" not in as_list(r) for r in as_list(statement["Resource"])), statement


@pytest.mark.parametrize("logical_id", FUNCTIONS)
def test_write_grants_are_exactly_what_the_code_writes(logical_id: str) -> None:
    # Given what the function's code writes (from the DAL's key functions)
    needed = WRITES[logical_id]

    # When the template's grants are collected
    granted = granted_writes(logical_id)

    # Then every grant is needed by a code path, and every code path is granted
    assert granted == needed


@pytest.mark.parametrize(
    ("logical_id", "table", "action"), sorted(ATTRIBUTES), ids=lambda v: str(v)
)
def test_updates_are_limited_to_the_attributes_the_code_sets(
    logical_id: str, table: str, action: str
) -> None:
    # Given the statements that grant this write
    grants = [
        s
        for s in write_statements(logical_id)
        if f"dynamodb:{action}" in as_list(s["Action"]) and table in tables_of(s["Resource"])
    ]

    # Then each names exactly the attributes the code sets, and cannot read the item back whole
    assert grants
    for statement in grants:
        assert attributes(statement) == ATTRIBUTES[(logical_id, table, action)], statement
        return_values = statement["Condition"]["StringEqualsIfExists"]["dynamodb:ReturnValues"]
        assert set(return_values) <= {"NONE", "UPDATED_OLD", "UPDATED_NEW"}


def test_usage_api_updates_only_the_last_used_at_of_key_items() -> None:
    # Given a key item as the DAL writes it, and a profile, a provisioning record, a map entry
    record = {"lookup_id": "k1a2b3c4d5e6f7a8", "tenant_id": "t_0123456789abcdef"}
    key_item = keys_dal.key_lookup_item(record)
    others = [
        tenants_dal.profile_item({"tenant_id": "t_0123456789abcdef", "created_at": "2026"}),
        keys_dal.key_index_item({**record, "prefix": "mb_test_", "created_at": "2026"}),
        {"pk": provisioning_dal.provision_pk("idem-key-1"), "sk": provisioning_dal.PROVISION_SK},
        {"pk": "STRIPE#cus_123", "sk": "CUSTOMER"},
    ]

    # When the usage API's UpdateItem grants on the tenants table are matched against them
    grants = [
        s
        for s in write_statements("UsageApiFunction")
        if "TenantsTable" in tables_of(s["Resource"])
    ]
    patterns = set().union(*(leading_keys(s) for s in grants))

    def allowed(pk: str) -> bool:
        return any(fnmatch.fnmatchcase(pk, p) for p in patterns)

    # Then the key item is writable (last_used_at only) and no other tenants item is
    assert [as_list(s["Action"]) for s in grants] == [["dynamodb:UpdateItem"]]
    assert allowed(key_item["pk"])
    assert not [o["pk"] for o in others if allowed(o["pk"])]
    assert attributes(grants[0]) == {"pk", "sk", "last_used_at"}


def test_patterns_match_the_keys_the_dal_builds() -> None:
    # Given real keys as the DAL builds them for a tenant
    tenant = "t_0123456789abcdef"
    keys = {
        USAGE_EVENT: outbox.event_pk(usage_source(tenant), "evt-1"),
        ALERT_EVENT: outbox.event_pk(ALERTS_SOURCE, "a1"),
        ADMIN_EVENT: outbox.event_pk(ADMIN_SOURCE, "x1"),
        STRIPE_EVENT: outbox.event_pk(STRIPE_SOURCE, "evt_1"),
        COUNTER: usage.counter_key(tenant, "2026-12", "api_calls", 0)["pk"],
        PROFILE: tenants_dal.tenant_pk(tenant),
        WEBHOOK_RECORD: webhooks.record_pk("evt_1"),
    }
    # (segments of the layout before the stream, and a dead letter's requeue item)
    _, segment = segments.segment_for([{"event": "{}", "accepted_at": "2026-12-03T00:00:00Z"}])

    # Then each pattern matches its key, and the tenant-scoped ones no other family's key
    for pattern, key in keys.items():
        assert fnmatch.fnmatchcase(key, pattern), (pattern, key)
    assert fnmatch.fnmatchcase(segment["pk"], SEGMENT)
    assert not fnmatch.fnmatchcase(outbox.event_pk(ADMIN_SOURCE, "x1"), USAGE_EVENT)
    assert not fnmatch.fnmatchcase(segment["pk"], COUNTER)
    assert not fnmatch.fnmatchcase(tenants_dal.tenant_pk(tenant), KEY_ITEM)
