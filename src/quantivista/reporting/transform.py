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
    "Transformed",
    "apply_rules",
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
    frame = pl.DataFrame(schema=input_schema(fields))
    # an empty frame checks names and types, but Polars refuses some casts (Date -> Boolean)
    # only when a value is there: one row of ordinary values runs the chain for real
    probe = _probe_row(frame.schema)
    for rule in rules:
        if not rule.enabled:
            continue
        if rule.rule_type is RuleType.FLATTEN and frame.schema.get(rule.source_field or "") == (
            pl.String()
        ):
            return None  # JSON text: its fields are known only from data
        try:
            frame, _, _ = _apply_one(frame, rule, reference, dry=True)
            probe, _, _ = _apply_one(probe, rule, reference, dry=True)
            if probe.is_empty():  # the row was rejected or filtered: each rule sees a value
                probe = _probe_row(probe.schema)
        except _ERRORS as exc:
            raise _fail(rule, _first_line(exc)) from exc
    return frame.schema


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


def reject(rows: pl.DataFrame, stage: str, reason: str | pl.Series) -> pl.DataFrame:
    """Return rows as dead-letter records: the row as JSON text, the stage, the reason and
    the input row number (when the rows carry `ROW_COLUMN`)."""
    if rows.is_empty():
        return pl.DataFrame(schema=REJECTED_SCHEMA)
    why = pl.lit(reason)
    row = pl.col(ROW_COLUMN) if ROW_COLUMN in rows.columns else pl.lit(None)
    own = [c for c in rows.columns if not c.startswith("_qv_")]
    return rows.select(
        record=pl.struct(own).struct.json_encode() if own else pl.lit("{}"),
        stage=pl.lit(stage),
        reason=why.cast(pl.String),
        row=row.cast(pl.Int64),
    )


def _split(
    frame: pl.DataFrame, bad: pl.Expr, rule: TransformationRule, reason: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split rows where `bad` holds off the frame, as rejected records."""
    mask = frame.select(bad.fill_null(False).alias("_bad"))["_bad"]
    if not mask.any():
        return frame, pl.DataFrame(schema=REJECTED_SCHEMA)
    return frame.filter(~mask), reject(frame.filter(mask), f"rule:{rule.rule_id}", reason)


def _cast(frame: pl.DataFrame, rule: TransformationRule) -> tuple[pl.Expr, pl.Expr]:
    src = rule.source_field or ""
    dtype, fmt = parse_dtype(rule.transformation_logic)
    col = pl.col(src)
    if fmt and dtype == pl.Date:
        out = col.cast(pl.String).str.to_date(fmt, strict=False)
    elif fmt:
        out = col.cast(pl.String).str.to_datetime(fmt, strict=False, time_zone="UTC")
    elif frame.schema[src] == pl.String() and dtype == pl.Date:
        out = col.str.to_date(strict=False)
    elif frame.schema[src] == pl.String() and isinstance(dtype, pl.Datetime):
        out = col.str.to_datetime(strict=False, time_zone="UTC")
    elif frame.schema[src] == pl.String() and dtype == pl.Boolean:
        # Polars has no text -> bool cast (it fails on data, not on an empty frame)
        out = (
            col.str.strip_chars()
            .str.to_lowercase()
            .replace_strict(_BOOLEANS, default=None, return_dtype=pl.Boolean)
        )
    else:
        out = col.cast(dtype, strict=False)
    # a value that was there and is gone after the cast could not be converted
    return out, col.is_not_null() & out.is_null()


def _timezone(frame: pl.DataFrame, rule: TransformationRule) -> tuple[pl.Expr, pl.Expr]:
    src = rule.source_field or ""
    zone = _zone(rule.transformation_logic)
    col = pl.col(src)
    dtype = frame.schema[src]
    if dtype == pl.String():
        col = col.str.to_datetime(strict=False)
        dtype = pl.Datetime("us")
    if not isinstance(dtype, pl.Datetime):
        raise InvalidInputError(f"{src} is {dtype}, not a timestamp")
    if dtype.time_zone is None:
        col = col.dt.replace_time_zone(zone, ambiguous="earliest", non_existent="null")
    out = col.dt.convert_time_zone("UTC")
    return out, pl.col(src).is_not_null() & out.is_null()


def _flatten(frame: pl.DataFrame, rule: TransformationRule) -> pl.DataFrame:
    src = rule.source_field or ""
    sep = rule.transformation_logic or "_"
    if frame.schema[src] == pl.String():
        sample = frame.get_column(src).drop_nulls().head(_JSON_SAMPLE)
        if sample.is_empty():
            return frame.drop(src)
        dtype = pl.read_ndjson(io.BytesIO("\n".join(sample.to_list()).encode())).to_struct().dtype
        frame = frame.with_columns(pl.col(src).str.json_decode(dtype))
    # nested structs: unnest level by level (columns, not rows)
    pending = [src]
    while pending:
        name = pending.pop()
        dtype = frame.schema[name]
        if not isinstance(dtype, pl.Struct):
            continue
        frame = frame.unnest(name, separator=sep)
        pending += [f"{name}{sep}{f.name}" for f in dtype.fields]
    return frame


def _lookup(frame: pl.DataFrame, rule: TransformationRule, reference: Reference) -> pl.DataFrame:
    table, key = _lookup_logic(rule.transformation_logic, reference)
    if table not in reference.tables:
        raise NotFoundError(f"unknown reference table {table!r}")
    ref = reference.tables[table].unique(subset=[key], keep="last")
    src = rule.source_field or ""
    if key not in ref.columns:
        raise InvalidInputError(f"reference table {table} has no column {key!r}")
    renames = {c: f"{c}_ref" for c in ref.columns if c != key and c in frame.columns}
    ref = ref.rename(renames).with_columns(pl.col(key).cast(frame.schema[src]))
    return frame.join(ref, left_on=src, right_on=key, how="left", coalesce=True)


def _currency(
    frame: pl.DataFrame, rule: TransformationRule, reference: Reference, dry: bool
) -> tuple[pl.Expr, pl.Expr]:
    source, to = _currency_logic(rule.transformation_logic)
    src = rule.source_field or ""
    ccy = pl.col(source) if source in frame.columns else pl.lit(source.upper())
    rates: dict[str, float] = {}
    if not dry:
        if reference.fx is None:
            raise NotFoundError("no FX rates loaded for a currency rule")
        codes = frame.select(ccy.unique().alias("c"))["c"].drop_nulls().to_list()
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
    out = pl.col(src).cast(pl.Float64) * rate
    return out, pl.col(src).is_not_null() & out.is_null()


def _reason(kind: RuleType, src: str | None) -> str:
    if kind is RuleType.CAST:
        return f"{src}: value cannot be cast"
    if kind is RuleType.TIMEZONE:
        return f"{src}: not a timestamp, or not a time in that zone"
    return f"{src}: no FX rate for the row's currency"


def _apply_one(
    frame: pl.DataFrame, rule: TransformationRule, reference: Reference, *, dry: bool = False
) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """Apply one rule; return the frame, rejected rows and the count filtered out."""
    kind = rule.rule_type
    src, target = rule.source_field, rule.target_field
    rejected = pl.DataFrame(schema=REJECTED_SCHEMA)
    filtered = 0
    if src and kind is not RuleType.DERIVE and src not in frame.columns:
        raise InvalidInputError(f"unknown field {src!r}")
    if kind is RuleType.RENAME:
        frame = frame.rename({src or "": target or ""})
    elif kind in (RuleType.CAST, RuleType.TIMEZONE, RuleType.CURRENCY):
        if kind is RuleType.CAST:
            out, bad = _cast(frame, rule)
        elif kind is RuleType.TIMEZONE:
            out, bad = _timezone(frame, rule)
        else:
            out, bad = _currency(frame, rule, reference, dry)
        cols = frame.select(_bad=bad.fill_null(False), _out=out)
        mask, values = cols["_bad"], cols["_out"]
        if mask.any():
            rejected = reject(frame.filter(mask), f"rule:{rule.rule_id}", _reason(kind, src))
            frame, values = frame.filter(~mask), values.filter(~mask)
        frame = frame.with_columns(values.alias(target or src or ""))
    elif kind is RuleType.DERIVE:
        frame = frame.with_columns(_sql(rule.transformation_logic).alias(target or ""))
    elif kind is RuleType.SCALE:
        factor = float(rule.transformation_logic)
        frame = frame.with_columns((pl.col(src or "") * factor).alias(target or src or ""))
    elif kind is RuleType.FILTER:
        before = frame.height
        frame = frame.filter(_sql(rule.transformation_logic).fill_null(False))
        filtered = before - frame.height
    elif kind is RuleType.FLATTEN:
        frame = _flatten(frame, rule)
    elif kind is RuleType.LOOKUP:
        frame = _lookup(frame, rule, reference)
    if rule.validation_criteria is not None:
        cond = _sql(rule.validation_criteria).fill_null(False)
        frame, failed = _split(
            frame, ~cond, rule, f"fails the rule's criteria: {rule.validation_criteria}"
        )
        rejected = pl.concat([rejected, failed])
    return frame, rejected, filtered


def apply_rules(
    frame: pl.DataFrame,
    rules: Sequence[TransformationRule],
    reference: Reference | None = None,
) -> Transformed:
    """Apply enabled rules in order; `RuleValidationError` when a rule does not fit the data."""
    reference = reference or Reference()
    rejected: list[pl.DataFrame] = []
    filtered = 0
    for rule in rules:
        if not rule.enabled:
            continue
        try:
            frame, bad, n = _apply_one(frame, rule, reference)
        except RuleValidationError:
            raise
        except _ERRORS as exc:
            raise _fail(rule, _first_line(exc)) from exc
        filtered += n
        if not bad.is_empty():
            rejected.append(bad)
    out = pl.concat(rejected) if rejected else pl.DataFrame(schema=REJECTED_SCHEMA)
    return Transformed(frame, out, filtered)
