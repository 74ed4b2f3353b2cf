"""DynamoDB's billing arithmetic: item sizes, capacity units, index entries.

Item size (docs: "DynamoDB item sizes and formats"): the sum over attributes of the UTF-8 bytes
of the name plus the value's size:
- String: its UTF-8 bytes. Binary: its raw bytes. Null and Boolean: 1 byte.
- Number: 1 byte per two significant digits (leading and trailing zeros trimmed), plus 1.
- String, number and binary sets: the sum of their elements' sizes.
- List and Map: 3 bytes of overhead plus, per element, its size and 1 byte (a map element's
  size includes its name).
Units (docs: "Read/write capacity mode"): a write is 1 WRU per 1 KB of the item, rounded up
(an update or delete is charged on the larger of the item before and after it); a read is 1 RRU
per 4 KB, strongly consistent, half that eventually consistent; a transactional item costs
twice. A Query is charged on the sum of the sizes of the items it reads, rounded up once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

KB = 1024
READ_BLOCK = 4 * KB


def number_size(text: str) -> int:
    """Bytes of a DynamoDB number given in its wire form (``"123.45"``, ``"-1e10"``)."""
    mantissa = text.strip().lstrip("+-").lower().split("e")[0]
    # Leading and trailing zeros are trimmed (after the point, and of an integer alike).
    digits = mantissa.replace(".", "").strip("0")
    return (max(1, len(digits)) + 1) // 2 + 1


def value_size(value: Mapping[str, Any]) -> int:
    """Bytes of one attribute value in DynamoDB's wire form (``{"S": ...}``, ``{"M": {...}}``)."""
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(str(inner).encode())
    if kind == "N":
        return number_size(str(inner))
    if kind == "B":
        return len(inner) if isinstance(inner, bytes | bytearray) else len(str(inner).encode())
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(str(s).encode()) for s in inner)
    if kind == "NS":
        return sum(number_size(str(n)) for n in inner)
    if kind == "BS":
        return sum(len(b) for b in inner)
    if kind == "L":
        return 3 + sum(value_size(v) + 1 for v in inner)
    if kind == "M":
        return 3 + sum(len(k.encode()) + value_size(v) + 1 for k, v in inner.items())
    raise ValueError(f"unknown DynamoDB type {kind!r}")


def item_size(item: Mapping[str, Mapping[str, Any]] | None) -> int:
    """Bytes of an item in wire form (0 for no item)."""
    if not item:
        return 0
    return sum(len(name.encode()) + value_size(v) for name, v in item.items())


def write_units(size: int, *, transactional: bool = False) -> int:
    """WRU of writing an item of ``size`` bytes (at least 1)."""
    units = max(1, math.ceil(size / KB))
    return units * (2 if transactional else 1)


def read_units(size: int, *, consistent: bool, transactional: bool = False) -> float:
    """RRU of reading ``size`` bytes in one request (at least one 4 KB block)."""
    blocks = max(1, math.ceil(size / READ_BLOCK))
    if transactional:
        return float(blocks * 2)
    return float(blocks) if consistent else blocks / 2


def index_entry(
    item: Mapping[str, Any] | None,
    *,
    index_keys: tuple[str, ...],
    table_keys: tuple[str, ...],
    projection: str,
    included: tuple[str, ...] = (),
) -> dict[str, Any] | None:
    """The entry ``item`` makes in a global secondary index (None if sparse-absent)."""
    if not item or any(k not in item for k in index_keys):
        return None
    if projection == "ALL":
        return dict(item)
    keep = set(index_keys) | set(table_keys) | (set(included) if projection == "INCLUDE" else set())
    return {k: v for k, v in item.items() if k in keep}


def index_write_units(
    old: Mapping[str, Any] | None, new: Mapping[str, Any] | None, index_keys: tuple[str, ...]
) -> int:
    """WRU a write costs in one index, from the old and new index entries: a put, a delete,
    an update in place, or a delete and a put when the entry's index key changed."""
    if old is None and new is None:
        return 0
    if old is None:
        return write_units(item_size(new))
    if new is None:
        return write_units(item_size(old))
    if any(old.get(k) != new.get(k) for k in index_keys):
        return write_units(item_size(old)) + write_units(item_size(new))
    if old == new:
        return 0
    return write_units(max(item_size(old), item_size(new)))
