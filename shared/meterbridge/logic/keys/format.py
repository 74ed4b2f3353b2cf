"""API key format, generation and hashing.

A key looks like ``mb_test_<lookup:12><secret:24><checksum:6>`` (base62 after the prefix):

- the prefix names the product and environment (``mb_live_``/``mb_test_``), so a leaked key is
  recognisable by secret scanners, as with Stripe's ``sk_live_`` and GitHub's ``ghp_``;
- ``lookup`` (12 chars, ~71 bits) finds the stored record and is not secret;
- ``secret`` (24 chars, ~143 bits of randomness) is the secret part;
- ``checksum`` is CRC32 of everything before it, so typos and most forged keys are refused
  before any database read.

Only ``HMAC-SHA256(pepper, key)`` is stored; the comparison is constant-time.

The key records (issue, list, revoke, rotate) are ``logic.keys.lifecycle``; ``auth`` needs only
this module, so ``lifecycle`` can call ``auth.forget`` without an import cycle.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import zlib
from typing import NamedTuple

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
PREFIXES = ("mb_live_", "mb_test_")
LOOKUP_LEN, SECRET_LEN, CHECKSUM_LEN = 12, 24, 6
BODY_LEN = LOOKUP_LEN + SECRET_LEN + CHECKSUM_LEN


def _random_base62(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def _base62(number: int, width: int) -> str:
    out = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        out.append(ALPHABET[rem])
    return "".join(reversed(out))


def checksum(text: str) -> str:
    return _base62(zlib.crc32(text.encode()), CHECKSUM_LEN)


class ParsedKey(NamedTuple):
    # A NamedTuple, not a frozen dataclass: as immutable, and a sixth of the cost to define
    # at import (a frozen dataclass execs six generated methods; docs/performance/cold_start.md).
    raw: str
    prefix: str
    lookup_id: str


def generate(environment: str = "test") -> tuple[str, str]:
    """A new key and its lookup id. The key is shown once and never stored."""
    prefix = f"mb_{environment}_"
    if prefix not in PREFIXES:
        raise ValueError("environment must be 'live' or 'test'")
    lookup = _random_base62(LOOKUP_LEN)
    head = prefix + lookup + _random_base62(SECRET_LEN)
    return head + checksum(head), lookup


def parse(raw: str) -> ParsedKey | None:
    """The key's parts if it is well-formed with a valid checksum, else None."""
    prefix = raw[: len(PREFIXES[0])]
    body = raw[len(prefix) :]
    if prefix not in PREFIXES or len(body) != BODY_LEN:
        return None
    if any(ch not in ALPHABET for ch in body):
        return None
    head, check = raw[:-CHECKSUM_LEN], raw[-CHECKSUM_LEN:]
    if not hmac.compare_digest(checksum(head), check):
        return None
    return ParsedKey(raw=raw, prefix=prefix, lookup_id=body[:LOOKUP_LEN])


def hash_key(raw: str, pepper: str) -> str:
    """What is stored: HMAC-SHA256 of the whole key under a server-side pepper."""
    return hmac.new(pepper.encode(), raw.encode(), hashlib.sha256).hexdigest()


def matches(raw: str, stored_hash: str, pepper: str) -> bool:
    return hmac.compare_digest(hash_key(raw, pepper), stored_hash)
