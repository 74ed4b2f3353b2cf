"""Meters as data: aggregations, JSONPath values, prices in Decimal, refused catalogues."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from meterbridge import jsonpath
from meterbridge.errors import ValidationFailed
from meterbridge.plans import PLANS_FILE_DEFAULT, _load, catalog


def _write(tmp_path: Path, raw: dict[str, Any]) -> str:
    path = tmp_path / "plans.json"
    path.write_text(json.dumps(raw))
    return str(path)


def _sample() -> dict[str, Any]:
    return json.loads(PLANS_FILE_DEFAULT.read_text())


def test_one_event_type_feeds_every_meter_that_lists_it() -> None:
    # Given the sample catalogue / When / Then
    cat = catalog()
    assert cat.meters_for_type("llm.completion") == ("api_calls", "tokens", "active_users")
    assert cat.meters_for_type("api.call") == ("api_calls",)
    assert cat.meters_for_type("never.listed") == ("events",)
    assert cat.meters["tokens"].aggregation == "SUM"
    assert cat.meters["queries"].aggregation == "COUNT"


@pytest.mark.parametrize(
    ("path", "data", "expected"),
    [
        ("$.tokens", {"tokens": 5}, 5),
        ("$.usage.output_tokens", {"usage": {"output_tokens": 7}}, 7),
        ("$['a key']", {"a key": "x"}, "x"),
        ('$["q\\"uote"]', {'q"uote': 1}, 1),
        ("$.items[1].n", {"items": [{"n": 1}, {"n": 2}]}, 2),
        ("$.missing", {"tokens": 5}, jsonpath.MISSING),
        ("$.tokens.deeper", {"tokens": 5}, jsonpath.MISSING),
        ("$.items[9]", {"items": []}, jsonpath.MISSING),
    ],
)
def test_a_path_names_one_value(path: str, data: dict[str, Any], expected: Any) -> None:
    # When the path is parsed and applied / Then it finds that one value or nothing
    assert jsonpath.parse(path).find(data) == expected or expected is jsonpath.MISSING
    assert (jsonpath.parse(path).find(data) is jsonpath.MISSING) == (expected is jsonpath.MISSING)


@pytest.mark.parametrize("path", ["tokens", "$", "$..tokens", "$.a[*]", "$.a[?(@.x)]", "$.a b"])
def test_paths_selecting_several_values_or_none_are_refused(path: str) -> None:
    with pytest.raises(jsonpath.JSONPathError):
        jsonpath.parse(path)


def _refusal(tmp_path: Path, change: Any) -> str:
    raw = _sample()
    change(raw)
    with pytest.raises(ValidationFailed) as info:
        _load(_write(tmp_path, raw))
    return info.value.message


@pytest.mark.parametrize(
    ("change", "names"),
    [
        (lambda r: r["meters"]["tokens"].update(aggregation="MEDIAN"), "meters.tokens.aggregation"),
        (lambda r: r["meters"]["tokens"].pop("value_property"), "value_property"),
        (lambda r: r["meters"]["tokens"].update(value_property="$..x"), "value_property"),
        (
            lambda r: r["meters"]["tokens"]["group_by"].update(model="model"),
            "group_by.model",
        ),
        (lambda r: r["plans"]["basic"]["limits"].update(gpus=4), "plans.basic.limits.gpus"),
        (
            lambda r: r["plans"]["pro"]["overage"].update(gpus={"per_units": 1, "price_cents": 1}),
            "plans.pro.overage.gpus",
        ),
        (
            lambda r: r["plans"]["pro"]["overage"]["queries"].update(price_cents="a quarter"),
            "price_cents",
        ),
        (
            lambda r: r["plans"]["pro"]["overage"].update(
                tokens={"tiers": [{"up_to": 10, "unit_price_cents": "1"}]}
            ),
            "up_to must be null",
        ),
        (lambda r: r["meters"]["queries"].update(types=[]), "meters.queries.types"),
    ],
)
def test_an_invalid_catalogue_is_refused_at_load_naming_the_field(
    tmp_path: Path, change: Any, names: str
) -> None:
    # Given the sample with one mistake / When loaded / Then refused, naming the field
    assert names in _refusal(tmp_path, change)


def test_per_block_prices_accept_decimal_strings_below_a_cent(tmp_path: Path) -> None:
    # Given $0.002 per 1,000 events over the limit ("0.2" cents per block)
    raw = _sample()
    raw["plans"]["basic"]["overage"]["events"] = {"per_units": 1000, "price_cents": "0.2"}
    plan = _load(_write(tmp_path, raw)).plan("basic")
    limit = 3_000_000
    # Then 2 blocks are 0.4 cents (rounds to 0), 3 blocks 0.6 (rounds half up to 1),
    # 25 blocks exactly 5 cents; the per-meter sum is rounded once
    assert plan.overage_cents("events", limit + 2000) == 0
    assert plan.overage_cents("events", limit + 2001) == 1
    assert plan.overage_cents("events", limit + 25_000) == 5


def test_graduated_tiers_price_the_whole_period_and_round_half_up_once() -> None:
    # Given Basic's tokens: the first 1,000,000 included, then 0.0002 cents a token
    basic = catalog().plan("basic")
    # Then 2,500 over is 0.5 cents (rounds up to 1), 7,499 over 1.4998 (1), a million over 200
    assert basic.overage_cents("tokens", 1_000_000) == 0
    assert basic.overage_cents("tokens", 1_002_500) == 1
    assert basic.overage_cents("tokens", 1_007_499) == 1
    assert basic.overage_cents("tokens", 2_000_000) == 200
    assert basic.overage_cents("tokens", Decimal("1000000.5")) == 0


def test_three_tiers_add_their_slices(tmp_path: Path) -> None:
    raw = _sample()
    raw["plans"]["pro"]["overage"]["storage_gb"] = {
        "tiers": [
            {"up_to": "10", "unit_price_cents": "0"},
            {"up_to": 20, "unit_price_cents": "100"},
            {"up_to": None, "unit_price_cents": "50.5"},
        ]
    }
    plan = _load(_write(tmp_path, raw)).plan("pro")
    # 25 GB: 10 free, 10 at 100, 5 at 50.5 = 1252.5 -> 1253; 12.5 GB: 2.5 at 100 = 250
    assert plan.overage_cents("storage_gb", 25) == 1253
    assert plan.overage_cents("storage_gb", Decimal("12.5")) == 250
    assert plan.overage_cents("storage_gb", 5) == 0


def test_hard_limits_hold_only_count_and_sum_meters() -> None:
    cat = catalog()
    free = cat.plan("free")
    assert cat.hard_capped(free, "tokens") and cat.hard_capped(free, "queries")
    assert not cat.hard_capped(free, "storage_gb")
    assert not cat.hard_capped(free, "active_users")
    assert not cat.hard_capped(cat.plan("basic"), "tokens")


def test_a_catalogue_shipped_in_the_layer_is_named_relative_to_the_package(
    tmp_path: Path,
) -> None:
    # Given the template's PlansFile parameter wired to every function
    import yaml

    from meterbridge.plans import resolve_plans_file

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    root = Path(__file__).resolve().parents[2]
    template = yaml.load((root / "template.yaml").read_text(), Loader=Loader)
    assert template["Parameters"]["PlansFile"]["Default"] == ""
    assert "METERBRIDGE_PLANS_FILE" in template["Globals"]["Function"]["Environment"]["Variables"]
    # Then empty is the built-in file, a relative name a file of the package, absolute as is
    assert resolve_plans_file("") == PLANS_FILE_DEFAULT
    assert resolve_plans_file("catalogues/acme.json") == (
        PLANS_FILE_DEFAULT.parent / "catalogues" / "acme.json"
    )
    assert resolve_plans_file(str(tmp_path / "x.json")) == tmp_path / "x.json"
