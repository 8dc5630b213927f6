"""The transformation rules engine: each rule type on real frames, and the validator."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantivista.errors import RuleValidationError
from quantivista.model.workflow import RuleType, TransformationRule
from quantivista.reference.fx import FxRates
from quantivista.reporting.transform import Reference, apply_rules, validate_rules


def rule(rule_type: str, src: str | None = None, dst: str | None = None, logic: str = "",
         criteria: str | None = None) -> TransformationRule:  # fmt: skip
    return TransformationRule(
        rule_id=f"r-{rule_type}",
        rule_type=RuleType(rule_type),
        source_field=src,
        target_field=dst,
        transformation_logic=logic,
        validation_criteria=criteria,
    )


FRAME = pl.DataFrame(
    {
        "px": ["10.5", "oops", "3"],
        "qty": [100, 200, 300],
        "ccy": ["EUR", "USD", "XXX"],
        "when": ["2026-03-01 09:30:00", "2026-07-01 09:30:00", "2026-07-01 16:00:00"],
        "sym": ["AAPL", "MSFT", "ZZZZ"],
    }
)


def test_rename_cast_derive_scale_chain_rejects_uncastable_rows_with_reason() -> None:
    out = apply_rules(
        FRAME,
        [
            rule("rename", "qty", "quantity"),
            rule("cast", "px", "price", "float64"),
            rule("derive", None, "notional", "price * quantity"),
            rule("scale", "notional", "notional_k", "0.001"),
        ],
    )
    assert out.frame["price"].to_list() == [10.5, 3.0]
    assert out.frame["notional_k"].to_list() == pytest.approx([1.05, 0.9])
    assert out.rejected.height == 1
    record = json.loads(out.rejected["record"][0])
    assert record["px"] == "oops" and record["qty"] == 200  # the row as it came in
    assert out.rejected["reason"][0] == "px: value cannot be cast"
    assert out.rejected["stage"][0] == "rule:r-cast"


def test_timezone_rule_turns_new_york_wall_time_into_utc_across_dst() -> None:
    out = apply_rules(FRAME, [rule("timezone", "when", "when_utc", "America/New_York")])
    assert out.frame["when_utc"].to_list() == [
        datetime(2026, 3, 1, 14, 30, tzinfo=UTC),  # EST: UTC-5
        datetime(2026, 7, 1, 13, 30, tzinfo=UTC),  # EDT: UTC-4
        datetime(2026, 7, 1, 20, 0, tzinfo=UTC),
    ]


def test_filter_counts_what_it_leaves_out() -> None:
    out = apply_rules(FRAME, [rule("filter", logic="qty >= 200")])
    assert out.frame["qty"].to_list() == [200, 300]
    assert out.filtered == 1
    assert out.rejected.is_empty()


def test_flatten_decodes_nested_json_text_level_by_level() -> None:
    frame = pl.DataFrame(
        {"id": [1, 2], "doc": ['{"a": 1, "b": {"c": "x"}}', '{"a": 2, "b": {"c": "y"}}']}
    )
    out = apply_rules(frame, [rule("flatten", "doc", logic="__")])
    assert out.frame.columns == ["id", "doc__a", "doc__b__c"]
    assert out.frame["doc__b__c"].to_list() == ["x", "y"]


def test_lookup_enriches_from_a_reference_table_and_keeps_unmatched_rows() -> None:
    instruments = pl.DataFrame({"symbol": ["AAPL", "MSFT"], "sector": ["Tech", "Software"]})
    out = apply_rules(
        FRAME,
        [rule("lookup", "sym", logic="instruments.symbol")],
        Reference(tables={"instruments": instruments}),
    )
    assert out.frame["sector"].to_list() == ["Tech", "Software", None]


def test_currency_conversion_uses_the_fx_service_and_rejects_unknown_currencies() -> None:
    fx = FxRates(
        pl.DataFrame(
            {
                "symbol": ["EURUSD", "EURUSD"],
                "ts": [datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)],
                "close": [1.10, 1.20],
            }
        )
    )
    out = apply_rules(FRAME, [rule("currency", "qty", "qty_usd", "ccy -> USD")], Reference(fx=fx))
    assert out.frame["qty_usd"].to_list() == pytest.approx([120.0, 200.0])  # latest rate
    assert out.rejected.height == 1
    assert json.loads(out.rejected["record"][0])["ccy"] == "XXX"


def test_validation_criteria_send_failing_rows_to_rejected() -> None:
    out = apply_rules(FRAME, [rule("scale", "qty", logic="2", criteria="qty < 500")])
    assert out.frame["qty"].to_list() == [200, 400]
    assert out.rejected["reason"].to_list() == ["fails the rule's criteria: qty < 500"]


FIELDS = {"px": "string", "qty": "int64", "ccy": "string", "when": "string", "sym": "string"}


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (rule("rename", "nope", "x"), "unknown field 'nope'"),
        (rule("derive", None, "x", "qty * missing"), 'unable to find column "missing"'),
        (rule("derive", None, "x", "qty *** ("), "not a Polars SQL expression"),
        (rule("cast", "qty", None, "decimal128"), "unknown type 'decimal128'"),
        (rule("timezone", "when", None, "Mars/Olympus"), "unknown time zone"),
        (rule("scale", "qty", None, "ten"), "a scale factor must be a number"),
        (rule("currency", "qty", None, "EUR"), "currency logic is"),
    ],
)
def test_validator_names_the_rule_and_the_reason(bad: TransformationRule, reason: str) -> None:
    with pytest.raises(RuleValidationError) as caught:
        validate_rules([rule("rename", "px", "price_text"), bad], FIELDS)
    assert caught.value.context["rule_id"] == bad.rule_id
    assert reason in caught.value.context["reason"]


def test_validator_follows_renames_and_derived_columns() -> None:
    schema = validate_rules(
        [
            rule("rename", "qty", "quantity"),
            rule("derive", None, "double", "quantity * 2"),
            rule("filter", logic="double > 10"),
        ],
        FIELDS,
    )
    assert schema is not None
    assert schema["double"] == pl.Int64
    with pytest.raises(RuleValidationError, match="unknown field 'qty'"):
        validate_rules([rule("rename", "qty", "quantity"), rule("scale", "qty", logic="2")], FIELDS)


# -- hypothesis: the validator raises only its own error, and what it passes runs -------------
COLUMNS = ["a", "b", "c", "zz"]  # zz is not in the input
TYPES = ["float64", "int64", "string", "bool", "date", "wat"]
ATOMS = st.sampled_from([*COLUMNS, "1", "2.5", "'x'", "NULL"])
OPS = st.sampled_from(["+", "-", "*", "/", ">", "=", "AND", "||", "((", ","])


@st.composite
def expressions(draw: st.DrawFn) -> str:
    parts = [draw(ATOMS)]
    for _ in range(draw(st.integers(0, 3))):
        parts += [draw(OPS), draw(ATOMS)]
    return " ".join(parts)


@st.composite
def rules(draw: st.DrawFn) -> TransformationRule:
    kind = draw(st.sampled_from(["rename", "cast", "derive", "scale", "filter", "timezone"]))
    src = draw(st.sampled_from(COLUMNS))
    dst = draw(st.sampled_from(["a", "b", "new1", "new2"]))
    logic = {
        "rename": "",
        "cast": draw(st.sampled_from(TYPES)),
        "derive": draw(expressions()),
        "scale": draw(st.sampled_from(["2", "0.5", "x"])),
        "filter": draw(expressions()),
        "timezone": draw(st.sampled_from(["UTC", "Europe/London", "Nowhere/Land"])),
    }[kind]
    return rule(kind, src if kind not in ("derive", "filter") else None, dst, logic)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(rules(), min_size=1, max_size=4))
def test_validator_raises_only_rule_errors_and_passed_rules_run_on_data(
    chain: list[TransformationRule],
) -> None:
    fields = {"a": "float64", "b": "int64", "c": "string"}
    try:
        schema = validate_rules(chain, fields)
    except RuleValidationError as exc:
        assert exc.context["rule_id"] in {r.rule_id for r in chain}
        return
    assert schema is not None
    data = pl.DataFrame(
        {"a": [1.5, None, -2.0], "b": [1, 2, None], "c": ["2026-01-01", "x", None]},
        schema={"a": pl.Float64, "b": pl.Int64, "c": pl.String},
    )
    out = apply_rules(data, chain)  # a chain the validator passed never fails on its schema
    assert out.frame.height + out.rejected.height + out.filtered == 3
    assert out.frame.schema == schema


def test_the_validator_reports_the_types_a_run_gives() -> None:
    # Polars types `NULL / a` as Null lazily but Float64 when run: found by hypothesis
    chain = [rule("rename", "a", "a"), rule("derive", None, "a", "NULL / a")]
    schema = validate_rules(chain, {"a": "float64"})
    data = pl.DataFrame({"a": [1.5, None]}, schema={"a": pl.Float64})
    assert schema == apply_rules(data, chain).frame.schema
    assert schema is not None and schema["a"] == pl.Float64


def test_a_cast_polars_refuses_only_on_values_is_refused_on_create() -> None:
    # Polars casts an empty Date column to Boolean, but not a Date value: found by hypothesis
    chain = [rule("cast", "c", "c", "date"), rule("cast", "c", "c", "bool")]
    with pytest.raises(RuleValidationError, match="Date to Boolean"):
        validate_rules(chain, {"c": "string"})
