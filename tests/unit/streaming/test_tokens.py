"""Stream tokens: HMAC-signed, short-lived, tenant-bound (no network)."""

from __future__ import annotations

import pytest

from meterbridge.errors import Unauthorized
from meterbridge_streaming import tokens

KEY = b"k" * 32


def test_a_token_verifies_to_its_tenant_until_it_expires() -> None:
    # Given a token issued at t=1000 for 300 s
    issued = tokens.issue("t_abc", "lookup1", key=KEY, ttl_s=300, now=1000)

    # When verified before and at expiry
    claims = tokens.verify(issued.token, key=KEY, now=1299)

    # Then the claims come back; at expiry it is refused
    assert (claims.tenant_id, claims.key_id, claims.expires_at) == ("t_abc", "lookup1", 1300)
    with pytest.raises(Unauthorized, match="expired"):
        tokens.verify(issued.token, key=KEY, now=1300)


@pytest.mark.parametrize("mangle", ["payload", "signature", "key", "garbage", "empty"])
def test_forged_or_malformed_tokens_are_refused(mangle: str) -> None:
    # Given a valid token for t_abc
    issued = tokens.issue("t_abc", "lookup1", key=KEY, ttl_s=300, now=1000)
    payload, signature = issued.token.split(".")
    forged_payload = tokens.issue("t_other", "lookup1", key=KEY, ttl_s=300, now=1000)
    candidates = {
        "payload": f"{forged_payload.token.split('.')[0]}.{signature}",
        "signature": f"{payload}.{signature[:-2]}AA",
        "key": tokens.issue("t_abc", "lookup1", key=b"x" * 32, ttl_s=300, now=1000).token,
        "garbage": "not-a-token",
        "empty": "",
    }

    # When / Then
    with pytest.raises(Unauthorized):
        tokens.verify(candidates[mangle], key=KEY, now=1001)


def test_without_a_configured_secret_each_process_has_a_random_one() -> None:
    # Given / When
    configured = tokens.signing_key("shared-secret")
    fallback = tokens.signing_key("")

    # Then the configured secret is used as is; the fallback is random and stable per process
    assert configured == b"shared-secret"
    assert len(fallback) == 32 and fallback == tokens.signing_key("")
