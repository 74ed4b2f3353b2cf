"""Every sample in ``events/`` runs with ``meterbridge invoke`` against ``meterbridge dev`` as
shipped: placeholders (a demo tenant's key, a fresh Stripe signature, the IAM context) are
filled at invoke time (issue 17)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.devstack import ROOT, running_dev

SAMPLES = sorted(p.relative_to(ROOT) for p in (ROOT / "events").rglob("*.json"))
# The unsigned admin sample shows the function's own refusal of a request API Gateway did not
# sign; every other sample succeeds.
EXPECTED = {"events/apigw-admin-unsigned.json": 401}


def function_for(sample: Path) -> str:
    name = sample.name
    if name.startswith("eventbridge-"):
        return "openmeter_flush"
    if name.startswith("apigw-admin-"):
        return "tenant_admin"
    if name.startswith("apigw-usage-"):
        return "usage_api"
    return "stripe_webhook"


# One fresh `meterbridge invoke` process per sample (over 15): a few seconds each on a quiet
# machine, over 15 s each with the two cores busy (a stress-ng run beside CI took more than
# the suite's 300 s default); each call keeps its own 120 s limit.
@pytest.mark.timeout(1800)
def test_every_sample_in_events_succeeds_with_invoke(tmp_path: Path) -> None:
    # Given the local stack as shipped
    assert len(SAMPLES) >= 15
    outcomes: dict[str, object] = {}
    with running_dev(tmp_path) as dev:
        # When each sample is invoked
        for sample in SAMPLES:
            done = dev.cli("invoke", function_for(sample), "--event", str(sample))
            assert done.returncode == 0, f"{sample}: {done.stderr[-2000:]}"
            outcomes[str(sample)] = json.loads(done.stdout)

    # Then each HTTP sample answered its expected status, and the flush ran cleanly
    for sample, result in outcomes.items():
        assert isinstance(result, dict)
        if "statusCode" in result:
            expected = EXPECTED.get(sample)
            if expected is None:
                assert 200 <= result["statusCode"] < 300, (sample, result)
            else:
                assert result["statusCode"] == expected, (sample, result)
        else:
            assert result["stopped"] is None, (sample, result)
    usage = json.loads(outcomes["events/apigw-usage-post-events.json"]["body"])  # type: ignore[index]
    assert usage["accepted"] + usage["duplicates"] == 2
    webhook = json.loads(outcomes["events/functionurl-stripe-webhook.json"]["body"])  # type: ignore[index]
    assert webhook["received"] is True
