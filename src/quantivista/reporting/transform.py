"""The transformation rules engine: rules applied in order to a Polars frame, column-wise.

    out = apply_rules(frame, rules, Reference(tables={"instruments": df}, fx=fx))
    out.frame, out.rejected, out.filtered

Expressions (derive, filter, validation criteria) are Polars SQL (`pl.sql_expr`), parsed,
never evaluated as Python. `validate_rules` checks rules before they are stored: with the
input's columns known, the whole chain runs on an empty frame of that schema, so an unknown
field or a type error is found at once (`RuleValidationError`, a 422 in the API); without
them, each rule's syntax alone.

Rows are never silently lost: a value that cannot be cast or converted, or a row failing a
rule's validation criteria, leaves the frame for `rejected` (the record as JSON text, the
rule and the reason); rows a filter leaves out are counted in `filtered`.
"""

from __future__ import annotations

import io
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any

import polars as pl

from quantivista.errors import InvalidInputError, NotFoundError, RuleValidationError
from quantivista.model.workflow import RuleType, TransformationRule
from quantivista.reference.currencies import CURRENCIES
from quantivista.reference.fx import FxRates

__all__ = [
    "DTYPES",
    "REJECTED_SCHEMA",
    "ROW_COLUMN",
    "Reference",
    "ALIVE_COLUMN",
    "RulePlan",
    "Transformed",
    "apply_rules",
    "collect",
    "encode_rows",
    "filtered_count",
    "plan_rules",
    "rule_rejects",
    "start_plan",
    "input_schema",
    "parse_dtype",
    "reject",
    "validate_rules",
]

DTYPES: dict[str, pl.DataType] = {
    "float64": pl.Float64(),
    "float32": pl.Float32(),
    "int64": pl.Int64(),
    "int32": pl.Int32(),
    "string": pl.String(),
    "bool": pl.Boolean(),
    "date": pl.Date(),
    "datetime": pl.Datetime("us", "UTC"),
    "json": pl.String(),  # JSON text (a flatten rule decodes it)
}

REJECTED_SCHEMA = pl.Schema(
    {"record": pl.String(), "stage": pl.String(), "reason": pl.String(), "row": pl.Int64()}
)
# a column the job engine adds: each input row's number, so a rejected row can be sent to the
# dead letters as it was read (not as the rules left it) and replayed through them again
ROW_COLUMN = "_qv_row"

# JSON text is decoded with a type inferred from this many values
_JSON_SAMPLE = 1000

_BOOLEANS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}
_ERRORS = (pl.exceptions.PolarsError, InvalidInputError, NotFoundError, ValueError)


@dataclass(frozen=True)
class Reference:
    """What lookup and currency rules may use: reference tables by name, and FX rates."""

    tables: Mapping[str, pl.DataFrame] = field(default_factory=dict)
    fx: FxRates | None = None


@dataclass
class Transformed:
    """The result of applying rules: the frame, rejected rows and how many were filtered."""

    frame: pl.DataFrame
    rejected: pl.DataFrame
    filtered: int = 0


def parse_dtype(text: str) -> tuple[pl.DataType, str | None]:
    """Return the type a cast names and its text format, if any (`date:%d/%m/%Y`)."""
    name, _, fmt = text.strip().partition(":")
    dtype = DTYPES.get(name.strip().lower())
    if dtype is None:
        raise ValueError(f"unknown type {name!r}; known: {', '.join(sorted(DTYPES))}")
    if fmt and not (dtype == pl.Date or isinstance(dtype, pl.Datetime)):
        raise ValueError("a format goes with date or datetime only")
    return dtype, fmt or None


@lru_cache(maxsize=256)
def _sql(text: str) -> pl.Expr:
    if not text.strip():
        raise ValueError("an empty expression")
    try:
        return pl.sql_expr(text)
    except Exception as exc:  # polars raises several kinds; all mean "not an expression"
        raise ValueError(f"not a Polars SQL expression: {exc}") from exc


def _zone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name.strip())
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc
    return name.strip()


def _currency_logic(text: str) -> tuple[str, str]:
    source, arrow, to = text.partition("->")
    source, to = source.strip(), to.strip().upper()
    if not arrow or not source or to not in CURRENCIES:
        raise ValueError("currency logic is '<ISO code or currency column> -> <ISO code>'")
    return source, to


def _lookup_logic(text: str, reference: Reference) -> tuple[str, str]:
    table, dot, key = text.strip().partition(".")
    if not dot or not table or not key:
        raise ValueError("lookup logic is '<reference table>.<key column>'")
    if reference.tables and table not in reference.tables:
        raise ValueError(f"unknown reference table {table!r}")
    return table, key


def _needs(rule: TransformationRule, *names: str) -> None:
    for name in names:
        if not getattr(rule, name):
            raise ValueError(f"a {rule.rule_type.value} rule needs {name}")


def _check_syntax(rule: TransformationRule, reference: Reference) -> None:
    """Raise ValueError when a rule cannot run on any input."""
    kind, logic = rule.rule_type, rule.transformation_logic
    if kind in (RuleType.RENAME, RuleType.CAST, RuleType.TIMEZONE, RuleType.SCALE):
        _needs(rule, "source_field")
    if kind is RuleType.RENAME:
        _needs(rule, "target_field")
    elif kind is RuleType.CAST:
        parse_dtype(logic)
    elif kind is RuleType.DERIVE:
        _needs(rule, "target_field")
        _sql(logic)
    elif kind is RuleType.TIMEZONE:
        _zone(logic)
    elif kind is RuleType.SCALE:
        try:
            float(logic)
        except ValueError as exc:
            raise ValueError(f"a scale factor must be a number, not {logic!r}") from exc
    elif kind is RuleType.FILTER:
        _sql(logic)
    elif kind is RuleType.FLATTEN:
        _needs(rule, "source_field")
    elif kind is RuleType.LOOKUP:
        _needs(rule, "source_field")
        _lookup_logic(logic, reference)
    elif kind is RuleType.CURRENCY:
        _needs(rule, "source_field")
        _currency_logic(logic)
    if rule.validation_criteria is not None:
        _sql(rule.validation_criteria)


def _fail(rule: TransformationRule, reason: str) -> RuleValidationError:
    return RuleValidationError(
        f"rule {rule.rule_id} ({rule.rule_type.value}) is invalid: {reason}",
        rule_id=rule.rule_id,
        reason=reason,
    )


def input_schema(fields: Mapping[str, str]) -> pl.Schema:
    """Return the schema of declared input fields (name -> `DTYPES` name)."""
    schema: dict[str, pl.DataType] = {}
    for name, type_name in fields.items():
        try:
            schema[name] = parse_dtype(type_name)[0]
        except ValueError as exc:
            raise RuleValidationError(f"field {name!r}: {exc}", reason=str(exc)) from exc
    return pl.Schema(schema)


def validate_rules(
    rules: Sequence[TransformationRule],
    fields: Mapping[str, str] | None = None,
    reference: Reference | None = None,
) -> pl.Schema | None:
    """Check rules before storing them; return the output schema when `fields` are known.

    `fields` maps the input's columns to type names (`DTYPES`; a `json` column is JSON
    text). Raise `RuleValidationError` naming the rule and the reason.
    """
    reference = reference or Reference()
    for rule in rules:
        try:
            _check_syntax(rule, reference)
        except ValueError as exc:
            raise _fail(rule, str(exc)) from exc
    if fields is None:
        return None
    empty = pl.DataFrame(schema=input_schema(fields))
    plan = start_plan(empty.lazy())
    # an empty frame checks names and types, but Polars refuses some casts (Date -> Boolean)
    # only when a value is there: one row of ordinary values runs the chain for real
    probe = start_plan(_probe_row(empty.schema).lazy())
    for n, rule in enumerate(rules):
        if not rule.enabled:
            continue
        if rule.rule_type is RuleType.FLATTEN and plan.schema.get(rule.source_field or "") == (
            pl.String()
        ):
            return None  # JSON text: its fields are known only from data
        try:
            _plan_one(plan, rule, n, reference, dry=True)
            _plan_one(probe, rule, n, reference, dry=True)
            row = probe.frame.collect()
            if not row.get_column(ALIVE_COLUMN)[0]:  # rejected or filtered: each rule sees a value
                probe = start_plan(_probe_row(probe.output_schema()).lazy())
        except _ERRORS as exc:
            raise _fail(rule, _first_line(exc)) from exc
    # Polars' lazy types can differ from what running gives (`NULL / a`: Null lazily, Float64
    # when run); the probe ran the chain for real, so its types win
    ran = probe.frame.collect().schema
    return pl.Schema({name: ran.get(name, dtype) for name, dtype in plan.output_schema().items()})


_PROBE_VALUES: dict[type[pl.DataType], Any] = {
    pl.Float64: 1.5, pl.Float32: 1.5, pl.Int64: 1, pl.Int32: 1, pl.Boolean: True,
    pl.String: "1", pl.Date: date(2026, 1, 2), pl.Datetime: datetime(2026, 1, 2, tzinfo=UTC),
}  # fmt: skip


def _probe_row(schema: pl.Schema) -> pl.DataFrame:
    """One row of an ordinary value per column (null where no value is known)."""
    return pl.DataFrame(
        {name: [_PROBE_VALUES.get(type(dtype))] for name, dtype in schema.items()},
        schema=schema,
    )


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def reject(
    rows: pl.DataFrame, stage: str | pl.Expr, reason: str | pl.Series | pl.Expr
) -> pl.DataFrame:
    """Return rows as dead-letter records: the row as JSON text, the stage, the reason and
    the input row number (when the rows carry `ROW_COLUMN`)."""
    if rows.is_empty():
        return pl.DataFrame(schema=REJECTED_SCHEMA)
    why = reason if isinstance(reason, pl.Expr) else pl.lit(reason)
    where = stage if isinstance(stage, pl.Expr) else pl.lit(stage)
    row = pl.col(ROW_COLUMN) if ROW_COLUMN in rows.columns else pl.lit(None)
    own = [c for c in rows.columns if not c.startswith("_qv_")]
    return rows.select(
        record=pl.struct(own).struct.json_encode() if own else pl.lit("{}"),
        stage=where.cast(pl.String),
        reason=why.cast(pl.String),
        row=row.cast(pl.Int64),
    )


def encode_rows(frame: pl.DataFrame, rows: pl.Series) -> pl.Series:
    """Return the rows of `frame` at positions `rows` as JSON text (its own columns)."""
    own = [c for c in frame.columns if not c.startswith("_qv_")]
    picked = frame.select(own)[rows]
    if not own:
        return pl.Series("record", ["{}"] * rows.len(), dtype=pl.String)
    return picked.select(pl.struct(own).struct.json_encode().alias("record")).to_series()


# A plan keeps every row: a rule that rejects a row sets its flag column and clears
# ALIVE_COLUMN, so later rules and checks skip it, and the frame is copied once (at the
# end) instead of once per rule that filters rows out.
ALIVE_COLUMN = "_qv_alive"
_TMP = "_qv_tmp"


@dataclass
class RulePlan:
    """Rules as one lazy plan: the frame, and the flag columns it gains (true on the rows
    a rule rejected, with the stage and reason, or a filter left out)."""

    frame: pl.LazyFrame
    schema: pl.Schema
    rejects: list[tuple[str, str, str]] = field(default_factory=list)
    filters: list[str] = field(default_factory=list)

    def flags(self) -> list[str]:
        """Return the columns the plan added (flags and ALIVE_COLUMN)."""
        return [ALIVE_COLUMN, *(f for f, _, _ in self.rejects), *self.filters]

    def output_schema(self) -> pl.Schema:
        """Return the schema of the rows without the plan's own columns."""
        added = set(self.flags())
        return pl.Schema({k: v for k, v in self.schema.items() if k not in added})


def start_plan(frame: pl.LazyFrame) -> RulePlan:
    """Return an empty plan over `frame` (every row alive)."""
    lazy = frame.with_columns(pl.lit(True).alias(ALIVE_COLUMN))
    return RulePlan(lazy, lazy.collect_schema())


def _cast(schema: pl.Schema, rule: TransformationRule) -> pl.Expr:
    src = rule.source_field or ""
    dtype, fmt = parse_dtype(rule.transformation_logic)
    col = pl.col(src)
    if fmt and dtype == pl.Date:
        return col.cast(pl.String).str.to_date(fmt, strict=False)
    if fmt:
        return col.cast(pl.String).str.to_datetime(fmt, strict=False, time_zone="UTC")
    if schema[src] == pl.String() and dtype == pl.Date:
        return col.str.to_date(strict=False)
    if schema[src] == pl.String() and isinstance(dtype, pl.Datetime):
        return col.str.to_datetime(strict=False, time_zone="UTC")
    if schema[src] == pl.String() and dtype == pl.Boolean:
        # Polars has no text -> bool cast (it fails on data, not on an empty frame)
        return (
            col.str.strip_chars()
            .str.to_lowercase()
            .replace_strict(_BOOLEANS, default=None, return_dtype=pl.Boolean)
        )
    return col.cast(dtype, strict=False)


def _timezone(schema: pl.Schema, rule: TransformationRule) -> pl.Expr:
    src = rule.source_field or ""
    zone = _zone(rule.transformation_logic)
    col = pl.col(src)
    dtype = schema[src]
    if dtype == pl.String():
        col = col.str.to_datetime(strict=False)
        dtype = pl.Datetime("us")
    if not isinstance(dtype, pl.Datetime):
        raise InvalidInputError(f"{src} is {dtype}, not a timestamp")
    if dtype.time_zone is None:
        col = col.dt.replace_time_zone(zone, ambiguous="earliest", non_existent="null")
    return col.dt.convert_time_zone("UTC")


def _flatten(plan: RulePlan, rule: TransformationRule) -> pl.LazyFrame:
    src = rule.source_field or ""
    sep = rule.transformation_logic or "_"
    lazy, schema = plan.frame, plan.schema
    if schema[src] == pl.String():
        # the JSON's type is inferred from a sample of the values (the plan runs that far)
        sample = (
            lazy.select(pl.col(src).filter(pl.col(ALIVE_COLUMN)).drop_nulls().head(_JSON_SAMPLE))
            .collect()
            .to_series()
        )
        if sample.is_empty():
            return lazy.drop(src)
        dtype = pl.read_ndjson(io.BytesIO("\n".join(sample.to_list()).encode())).to_struct().dtype
        lazy = lazy.with_columns(pl.col(src).str.json_decode(dtype))
        schema = lazy.collect_schema()
    # nested structs: unnest level by level (columns, not rows)
    pending = [src]
    while pending:
        name = pending.pop()
        dtype = schema[name]
        if not isinstance(dtype, pl.Struct):
            continue
        lazy = lazy.unnest(name, separator=sep)
        schema = lazy.collect_schema()
        pending += [f"{name}{sep}{f.name}" for f in dtype.fields]
    return lazy


def _lookup(plan: RulePlan, rule: TransformationRule, reference: Reference) -> pl.LazyFrame:
    table, key = _lookup_logic(rule.transformation_logic, reference)
    if table not in reference.tables:
        raise NotFoundError(f"unknown reference table {table!r}")
    ref = reference.tables[table].unique(subset=[key], keep="last")
    src = rule.source_field or ""
    if key not in ref.columns:
        raise InvalidInputError(f"reference table {table} has no column {key!r}")
    renames = {c: f"{c}_ref" for c in ref.columns if c != key and c in plan.schema}
    ref = ref.rename(renames).with_columns(pl.col(key).cast(plan.schema[src]))
    return plan.frame.join(
        ref.lazy(), left_on=src, right_on=key, how="left", coalesce=True, maintain_order="left"
    )


def _currency(plan: RulePlan, rule: TransformationRule, reference: Reference, dry: bool) -> pl.Expr:
    source, to = _currency_logic(rule.transformation_logic)
    src = rule.source_field or ""
    column = source in plan.schema
    ccy = pl.col(source) if column else pl.lit(source.upper())
    rates: dict[str, float] = {}
    if not dry:
        if reference.fx is None:
            raise NotFoundError("no FX rates loaded for a currency rule")
        codes = [source.upper()]
        if column:  # the rates of the currencies present (the plan runs that far)
            alive = pl.col(source).filter(pl.col(ALIVE_COLUMN))
            found = plan.frame.select(alive.unique().alias("c")).collect()["c"]
            codes = [str(c) for c in found.drop_nulls()]
        for code in codes:  # a loop over currencies, not rows
            code = str(code).upper()
            if code == to:
                rates[code] = 1.0
                continue
            try:
                series = reference.fx.rate(code, to)
            except (NotFoundError, InvalidInputError):
                continue  # rows in this currency are rejected
            if not series.is_empty():
                rates[code] = float(series.sort("ts")["rate"][-1])
    rate = (
        ccy.cast(pl.String)
        .str.to_uppercase()
        .replace_strict(rates, default=None, return_dtype=pl.Float64)
    )
    return pl.col(src).cast(pl.Float64) * rate


def _reason(kind: RuleType, src: str | None) -> str:
    if kind is RuleType.CAST:
        return f"{src}: value cannot be cast"
    if kind is RuleType.TIMEZONE:
        return f"{src}: not a timestamp, or not a time in that zone"
    return f"{src}: no FX rate for the row's currency"


def _drop_rows(plan: RulePlan, flag: str, bad: pl.Expr) -> None:
    """Flag the alive rows where `bad` holds, and clear their ALIVE_COLUMN."""
    alive = pl.col(ALIVE_COLUMN)
    plan.frame = plan.frame.with_columns((alive & bad.fill_null(False)).alias(flag)).with_columns(
        (alive & ~pl.col(flag)).alias(ALIVE_COLUMN)
    )


def _plan_one(
    plan: RulePlan, rule: TransformationRule, n: int, reference: Reference, *, dry: bool = False
) -> None:
    """Add rule number `n` to the plan (its schema checked at once)."""
    kind = rule.rule_type
    src, target = rule.source_field, rule.target_field
    if src and kind is not RuleType.DERIVE and src not in plan.schema:
        raise InvalidInputError(f"unknown field {src!r}")
    if kind is RuleType.RENAME:
        plan.frame = plan.frame.rename({src or "": target or ""})
    elif kind in (RuleType.CAST, RuleType.TIMEZONE, RuleType.CURRENCY):
        if kind is RuleType.CAST:
            out = _cast(plan.schema, rule)
        elif kind is RuleType.TIMEZONE:
            out = _timezone(plan.schema, rule)
        else:
            out = _currency(plan, rule, reference, dry)
        flag = f"_qv_rule{n}"
        plan.frame = plan.frame.with_columns(out.alias(_TMP))
        # a value that was there and is gone after the conversion could not be converted
        _drop_rows(plan, flag, pl.col(src or "").is_not_null() & pl.col(_TMP).is_null())
        plan.frame = plan.frame.with_columns(pl.col(_TMP).alias(target or src or "")).drop(_TMP)
        plan.rejects.append((flag, f"rule:{rule.rule_id}", _reason(kind, src)))
    elif kind is RuleType.DERIVE:
        plan.frame = plan.frame.with_columns(_sql(rule.transformation_logic).alias(target or ""))
    elif kind is RuleType.SCALE:
        factor = float(rule.transformation_logic)
        plan.frame = plan.frame.with_columns(
            (pl.col(src or "") * factor).alias(target or src or "")
        )
    elif kind is RuleType.FILTER:
        flag = f"_qv_filter{n}"
        _drop_rows(plan, flag, ~_sql(rule.transformation_logic).fill_null(False))
        plan.filters.append(flag)
    elif kind is RuleType.FLATTEN:
        plan.frame = _flatten(plan, rule)
    elif kind is RuleType.LOOKUP:
        plan.frame = _lookup(plan, rule, reference)
    if rule.validation_criteria is not None:
        flag = f"_qv_criteria{n}"
        _drop_rows(plan, flag, ~_sql(rule.validation_criteria).fill_null(False))
        reason = f"fails the rule's criteria: {rule.validation_criteria}"
        plan.rejects.append((flag, f"rule:{rule.rule_id}", reason))
    plan.schema = plan.frame.collect_schema()


def plan_rules(
    frame: pl.LazyFrame,
    rules: Sequence[TransformationRule],
    reference: Reference | None = None,
) -> RulePlan:
    """Plan the enabled rules in order over `frame` (nothing runs until it is collected,
    except what a currency or JSON flatten rule must see of the data first)."""
    reference = reference or Reference()
    plan = start_plan(frame)
    for n, rule in enumerate(rules):
        if not rule.enabled:
            continue
        try:
            _plan_one(plan, rule, n, reference)
        except RuleValidationError:
            raise
        except _ERRORS as exc:
            raise _fail(rule, _first_line(exc)) from exc
    return plan


def collect(frame: pl.LazyFrame) -> pl.DataFrame:
    """Run a plan; a failure on the data is a `RuleValidationError` with the reason."""
    try:
        return frame.collect()
    except _ERRORS as exc:
        raise RuleValidationError(
            f"the rules and checks failed on the data: {_first_line(exc)}",
            reason=_first_line(exc),
        ) from exc


def rule_rejects(frame: pl.DataFrame, plan: RulePlan) -> pl.DataFrame:
    """Return the rows of a collected plan that rules rejected (`REJECTED_SCHEMA`; the
    record as the rules left it: the job replaces it with the row as read)."""
    flags = [f for f, _, _ in plan.rejects]
    if not flags:
        return pl.DataFrame(schema=REJECTED_SCHEMA)
    bad = frame.filter(pl.any_horizontal(flags))
    # a row has one flag at most: a rejected row is not alive for the next rules
    stage = pl.coalesce([pl.when(pl.col(f)).then(pl.lit(s)) for f, s, _ in plan.rejects])
    reason = pl.coalesce([pl.when(pl.col(f)).then(pl.lit(r)) for f, _, r in plan.rejects])
    return reject(bad, stage, reason)


def filtered_count(frame: pl.DataFrame, plan: RulePlan) -> int:
    """Return how many rows of a collected plan the filter rules left out."""
    if not plan.filters:
        return 0
    return int(frame.select(pl.sum_horizontal(pl.col(plan.filters).sum())).item())


def apply_rules(
    frame: pl.DataFrame,
    rules: Sequence[TransformationRule],
    reference: Reference | None = None,
) -> Transformed:
    """Apply enabled rules in order; `RuleValidationError` when a rule does not fit the data.

    Rejected records are the rows as they came in.
    """
    numbered = ROW_COLUMN in frame.columns
    if not numbered:
        frame = frame.with_row_index(ROW_COLUMN).with_columns(pl.col(ROW_COLUMN).cast(pl.Int64))
    plan = plan_rules(frame.lazy(), rules, reference)
    out = collect(plan.frame)
    rejected = rule_rejects(out, plan)
    if not rejected.is_empty():
        originals = encode_rows(frame, rejected.get_column("row"))
        rejected = rejected.with_columns(originals.alias("record"))
    kept = out.filter(pl.col(ALIVE_COLUMN)).drop(plan.flags())
    if not numbered:
        kept = kept.drop(ROW_COLUMN)
        rejected = rejected.with_columns(pl.lit(None, dtype=pl.Int64).alias("row"))
    return Transformed(kept, rejected, filtered_count(out, plan))
