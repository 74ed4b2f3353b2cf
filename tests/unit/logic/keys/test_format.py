"""Key format: prefix, entropy, checksum, hashing (no network)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from meterbridge.logic.keys import format as keys


def test_generated_keys_have_prefix_lookup_and_valid_checksum() -> None:
    # Given / When a test and a live key
    test_key, test_lookup = keys.generate("test")
    live_key, _ = keys.generate("live")

    # Then they parse back with their prefix and lookup id
    parsed = keys.parse(test_key)
    assert parsed is not None and parsed.prefix == "mb_test_" and parsed.lookup_id == test_lookup
    assert keys.parse(live_key) is not None and live_key.startswith("mb_live_")
    assert len(test_key) == len("mb_test_") + keys.BODY_LEN


def test_secret_part_carries_at_least_128_random_bits() -> None:
    # Given / When the size of the random secret part
    bits = keys.SECRET_LEN * math.log2(len(keys.ALPHABET))

    # Then it is at least 128 bits (the lookup id adds ~71 more)
    assert bits >= 128


@given(st.integers(min_value=8, max_value=49), st.sampled_from(keys.ALPHABET))
def test_any_single_character_change_is_refused_by_the_checksum(pos: int, ch: str) -> None:
    # Given a valid key and a one-character change in its body
    raw, _ = keys.generate("test")
    changed = raw[:pos] + ch + raw[pos + 1 :]

    # When / Then the changed key does not parse (unless the change was a no-op)
    assert (keys.parse(changed) is None) or changed == raw


def test_malformed_keys_are_refused() -> None:
    # Given / When / Then
    raw, _ = keys.generate("test")
    bad_keys = ["", "mb_test_", raw[:-1], "sk_test_" + raw[8:], raw + "x", raw.replace("_", "-")]
    for bad in bad_keys:
        assert keys.parse(bad) is None


def test_hash_is_peppered_and_compared_in_constant_time() -> None:
    # Given a key and its stored hash
    raw, _ = keys.generate("test")
    stored = keys.hash_key(raw, "pepper-a")

    # When / Then it matches only with the same pepper, and never contains the key
    assert keys.matches(raw, stored, "pepper-a")
    assert not keys.matches(raw, stored, "pepper-b")
    assert raw not in stored and len(stored) == 64


def test_stored_record_holds_the_hash_and_a_12_char_prefix_only() -> None:
    # Given settings with a pepper
    from meterbridge.logic.keys import lifecycle
    from meterbridge.settings import get_settings

    # When a record is made for a new key
    raw, record = lifecycle.new_record("t_0123456789abcdef", get_settings())

    # Then the record never holds the secret
    assert record.prefix == raw[:12]
    assert raw[12:] not in str(record)
    assert record.key_hash == keys.hash_key(raw, get_settings().key_pepper)
