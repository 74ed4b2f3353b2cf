"""Shard leases of the segment layout's drain (in the idempotency table).

A run works a segment shard only while it holds that shard's lease (one conditional write per
shard, renewed per page), so overlapping runs drain different shards and their claims rarely
collide. The lease is an optimisation: the per-segment claims still decide who sends.
"""

from __future__ import annotations

import contextlib

from meterbridge.dal import dynamo
from meterbridge.errors import ConditionFailed

SHARD_LEASE_SK = "FLUSH_LEASE"
_SHARD_LEASE_TTL_S = 24 * 3600


def _shard_key(events_table: str, shard: str) -> dict[str, str]:
    return {"pk": f"FLUSH#{events_table}#{shard}", "sk": SHARD_LEASE_SK}


def acquire_shard(
    lease_table: str, events_table: str, shard: str, *, owner: str, now_ms: int, lease_ms: int
) -> bool:
    """Take (or renew) the lease on ``shard`` until ``now_ms + lease_ms``. False if another
    run holds it."""
    return dynamo.update_if(
        lease_table,
        _shard_key(events_table, shard),
        set_="SET lease_owner = :me, lease_until = :until, expires_at = :exp",
        condition="attribute_not_exists(pk) OR lease_until < :now OR lease_owner = :me",
        vals={
            ":me": owner,
            ":until": now_ms + lease_ms,
            ":now": now_ms,
            ":exp": now_ms // 1000 + _SHARD_LEASE_TTL_S,
        },
    )


def release_shard(lease_table: str, events_table: str, shard: str, *, owner: str) -> None:
    """Give the shard back (a no-op if the lease passed to another run)."""
    with contextlib.suppress(ConditionFailed):
        dynamo.delete(
            lease_table,
            _shard_key(events_table, shard),
            condition="lease_owner = :me",
            vals={":me": owner},
        )
