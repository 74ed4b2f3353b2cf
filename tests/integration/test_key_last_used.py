"""Keys and usage that tell the truth (issue 17): ``last_used_at`` recorded at most once a
minute per key off the request path, an expired key listed as ``expired``, and no past period
priced before the tenant existed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from meterbridge.logic.keys import usage as key_usage
from meterbridge.logic.usage_report import usage_report
from meterbridge.settings import get_settings
from tests.support import tenants as helpers
from tests.support.tenants import AUTH, body, idem, scan_all

admin = helpers.admin


def create_tenant(admin: TestClient) -> tuple[str, dict]:
    resp = admin.post("/admin/tenants", json=body(), headers=idem())
    assert resp.status_code == 201, resp.text
    return resp.json()["tenant"]["tenant_id"], resp.json()["api_key"]


def key_items(table: str, key_id: str) -> list[dict]:
    return [i for i in scan_all(table) if i["pk"]["S"] == f"KEY#{key_id}"]


def test_last_used_at_is_recorded_once_a_minute_and_listed(admin: TestClient, aws) -> None:
    # Given a tenant's fresh key, never used
    from meterbridge.api.usage import create_app

    key_usage.reset()
    tenant_id, key = create_tenant(admin)
    before = admin.get(f"/admin/tenants/{tenant_id}/keys", headers=AUTH).json()
    usage = TestClient(create_app())

    # When the key is used three times in a row
    answers = [
        usage.get("/v1/usage", headers={"Authorization": f"Bearer {key['secret']}"})
        for _ in range(3)
    ]
    key_usage.wait_idle()
    listed = admin.get(f"/admin/tenants/{tenant_id}/keys", headers=AUTH).json()
    [item] = key_items(aws["TenantsTable"], key["key_id"])
    first = item["last_used_at"]["S"]

    # Then the key item holds last_used_at, shown in the list
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert before[0]["last_used_at"] is None
    assert listed[0]["last_used_at"] == first
    assert datetime.fromisoformat(first) > datetime.now(UTC) - timedelta(minutes=5)
    # And another process writing within the minute is refused by the condition, not after it
    settings = get_settings()
    assert key_usage.record(key["key_id"], settings) is False
    later = datetime.now(UTC) + timedelta(seconds=61)
    assert key_usage.record(key["key_id"], settings, now=later) is True
    [item] = key_items(aws["TenantsTable"], key["key_id"])
    assert item["last_used_at"]["S"] > first


def test_a_key_past_its_grace_period_lists_as_expired(admin: TestClient) -> None:
    # Given a key rotated with no grace period
    tenant_id, key = create_tenant(admin)
    rotated = admin.post(
        f"/admin/tenants/{tenant_id}/keys/{key['key_id']}/rotate",
        json={"grace_seconds": 0},
        headers=AUTH,
    )

    # When the keys are listed
    listed = admin.get(f"/admin/tenants/{tenant_id}/keys", headers=AUTH).json()

    # Then the old key is expired and the new one active
    assert rotated.status_code == 201, rotated.text
    status = {k["key_id"]: k["status"] for k in listed}
    assert status[key["key_id"]] == "expired"
    assert status[rotated.json()["new_key"]["key_id"]] == "active"


def test_periods_before_the_tenant_existed_are_not_priced(admin: TestClient) -> None:
    # Given a tenant created this month on a paid plan
    tenant_id, _ = create_tenant(admin)
    now = datetime.now(UTC)
    this = f"{now.year:04d}-{now.month:02d}"
    back = now.replace(day=1) - timedelta(days=150)
    five_months_ago = f"{back.year:04d}-{back.month:02d}"

    # When its past months are asked for
    report = usage_report(tenant_id, "basic", first=five_months_ago, last=this)

    # Then only the periods since it exists are listed, so no base price before it
    assert [p.period for p in report.periods] == [this]
    assert report.periods[0].base_price_cents == 9900
