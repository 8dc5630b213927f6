"""Declarative quality checks over a frame: a report, the valid rows and the dead letters.

    result = run_checks(frame, checks, job_id="j1", now=clock.now(), reference=reference)
    result.valid, result.rejected, result.report

Every row check is one Polars expression; all of them run in one pass. A row failing an
`error` check leaves `valid` for `rejected` with every failed check named in its reason;
`warning` checks only count. `freshness` judges the whole batch (its newest value).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import polars as pl

from quantivista.errors import RuleValidationError
from quantivista.model.workflow import (
    CheckType,
    ColumnProfile,
    DataProfile,
    DataQualityReport,
    QualityCheck,
    Severity,
    ValidationError,
)
from quantivista.reporting.transform import REJECTED_SCHEMA, Reference, reject

__all__ = ["CheckResult", "profile", "run_checks", "validate_checks"]

_EXAMPLES = 5  # failing values kept per check in the report
_NUMERIC = (pl.Float64, pl.Float32, pl.Int64, pl.Int32, pl.Int16, pl.Int8, pl.UInt64, pl.UInt32)


@dataclass
class CheckResult:
    """What the checks found: valid rows, rejected records (`REJECTED_SCHEMA`), the report."""

    valid: pl.DataFrame
    rejected: pl.DataFrame
    report: DataQualityReport


def _fail(check: QualityCheck, reason: str) -> RuleValidationError:
    return RuleValidationError(
        f"check {check.check_id} ({check.check_type.value}) is invalid: {reason}",
        rule_id=check.check_id,
        reason=reason,
    )


def _param(check: QualityCheck, name: str) -> Any:
    if name not in check.params:
        raise _fail(check, f"needs the parameter {name!r}")
    return check.params[name]


def _failing(check: QualityCheck, reference: Reference) -> pl.Expr | None:
    """Return the expression true on failing rows (None: a whole-batch check)."""
    kind = check.check_type
    if kind is CheckType.CUSTOM_SQL:
        try:
            return ~pl.sql_expr(str(_param(check, "condition"))).fill_null(False)
        except Exception as exc:  # polars raises several kinds: all mean a bad condition
            raise _fail(check, f"not a Polars SQL condition: {exc}") from exc
    if check.field is None:
        raise _fail(check, "needs a field")
    col = pl.col(check.field)
    if kind is CheckType.NOT_NULL:
        return col.is_null()
    if kind is CheckType.UNIQUE:
        return col.is_not_null() & ~col.is_first_distinct()  # the first of a value is kept
    if kind is CheckType.RANGE:
        low, high = check.params.get("min"), check.params.get("max")
        if low is None and high is None:
            raise _fail(check, "needs min, max or both")
        bad = pl.lit(False)
        if low is not None:
            bad = bad | (col < low)
        if high is not None:
            bad = bad | (col > high)
        return bad.fill_null(False)
    if kind is CheckType.REGEX:
        pattern = str(_param(check, "pattern"))
        try:
            pl.Series(["probe"]).str.contains(pattern)
        except pl.exceptions.PolarsError as exc:
            raise _fail(check, f"bad regular expression: {exc}") from exc
        return ~col.cast(pl.String).str.contains(pattern).fill_null(True)
    if kind is CheckType.ALLOWED_VALUES:
        values = _param(check, "values")
        if not isinstance(values, list):
            raise _fail(check, "values must be a list")
        return col.is_not_null() & ~col.is_in(values)
    if kind is CheckType.REFERENTIAL:
        table, column = str(_param(check, "table")), str(_param(check, "column"))
        ref = reference.tables.get(table)
        if ref is None or column not in ref.columns:
            raise _fail(check, f"unknown reference {table}.{column}")
        return col.is_not_null() & ~col.is_in(ref.get_column(column).implode())
    if kind is CheckType.FRESHNESS:
        float(_param(check, "max_age_s"))
        return None
    raise _fail(check, "unknown check type")  # pragma: no cover - the enum is exhaustive


def validate_checks(
    checks: Sequence[QualityCheck],
    schema: pl.Schema | None = None,
    reference: Reference | None = None,
) -> None:
    """Raise `RuleValidationError` for a check that cannot run (on `schema`, when known)."""
    reference = reference or Reference()
    empty = pl.DataFrame(schema=schema) if schema is not None else None
    for check in checks:
        if schema is not None and check.field is not None and check.field not in schema:
            raise _fail(check, f"unknown field {check.field!r}")
        expr = _failing(check, reference)
        if empty is not None and expr is not None:
            try:
                empty.select(expr)
            except pl.exceptions.PolarsError as exc:
                raise _fail(check, str(exc).strip().splitlines()[0]) from exc


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def profile(frame: pl.DataFrame) -> DataProfile:
    """Return per-column statistics of `frame`, computed in one pass."""
    exprs: list[pl.Expr] = []
    for name, dtype in frame.schema.items():
        col = pl.col(name)
        exprs += [
            col.null_count().alias(f"{name}\x00nulls"),
            # HyperLogLog: exact counts of every column cost more than the rest of a job
            col.approx_n_unique().alias(f"{name}\x00distinct"),
        ]
        if dtype.is_numeric() or dtype.is_temporal() or dtype == pl.String():
            exprs += [col.min().alias(f"{name}\x00min"), col.max().alias(f"{name}\x00max")]
        if isinstance(dtype, _NUMERIC):
            exprs.append(col.cast(pl.Float64).mean().alias(f"{name}\x00mean"))
    row = frame.select(exprs).row(0, named=True) if exprs else {}
    columns = {
        name: ColumnProfile(
            dtype=str(dtype),
            null_count=int(row[f"{name}\x00nulls"]),
            distinct_count=int(row[f"{name}\x00distinct"]),
            min=_jsonable(row.get(f"{name}\x00min")),
            max=_jsonable(row.get(f"{name}\x00max")),
            mean=row.get(f"{name}\x00mean"),
        )
        for name, dtype in frame.schema.items()
    }
    return DataProfile(row_count=frame.height, columns=columns)


def _freshness(frame: pl.DataFrame, check: QualityCheck, now: datetime) -> ValidationError | None:
    field = check.field or ""
    if field not in frame.columns:
        raise _fail(check, f"unknown field {field!r}")
    newest = frame.get_column(field).max()
    limit = now - timedelta(seconds=float(check.params["max_age_s"]))
    if isinstance(newest, datetime) and newest.tzinfo is None:
        newest = newest.replace(tzinfo=now.tzinfo)
    if isinstance(newest, date) and not isinstance(newest, datetime):
        stale = newest < limit.date()
    else:
        stale = not isinstance(newest, datetime) or newest < limit
    if not stale:
        return None
    return ValidationError(
        check_id=check.check_id,
        check_type=check.check_type,
        field=check.field,
        severity=check.severity,
        failed_records=0,
        message=f"newest {field} is {_jsonable(newest)}, older than {limit.isoformat()}",
    )


def run_checks(
    frame: pl.DataFrame,
    checks: Sequence[QualityCheck],
    *,
    job_id: str,
    now: datetime,
    reference: Reference | None = None,
    prior_invalid: int = 0,
) -> CheckResult:
    """Run the checks; `prior_invalid` rows were already rejected upstream (by rules).

    The report counts them as invalid records too: total = valid + invalid.
    """
    reference = reference or Reference()
    validate_checks(checks, frame.schema, reference)
    row_checks = [(c, _failing(c, reference)) for c in checks]
    flagged = [(c, e) for c, e in row_checks if e is not None]
    errors: list[ValidationError] = []
    if flagged:
        masks = frame.select(e.alias(f"_c{i}") for i, (_, e) in enumerate(flagged))
    for i, (check, _) in enumerate(flagged):
        mask = masks.get_column(f"_c{i}")
        failed = int(mask.sum())
        if failed:
            examples = []
            if check.field is not None:
                examples = [
                    _jsonable(v) for v in frame.get_column(check.field).filter(mask).head(_EXAMPLES)
                ]
            errors.append(
                ValidationError(
                    check_id=check.check_id,
                    check_type=check.check_type,
                    field=check.field,
                    severity=check.severity,
                    failed_records=failed,
                    message=f"{failed} rows fail {check.check_type.value}"
                    + (f" on {check.field}" if check.field else ""),
                    examples=examples,
                )
            )
    for check, expr in row_checks:
        if expr is None:
            found = _freshness(frame, check, now)
            if found is not None:
                errors.append(found)
    hard = [i for i, (c, _) in enumerate(flagged) if c.severity is Severity.ERROR]
    if hard and frame.height:
        bad = pl.any_horizontal(pl.col(f"_c{i}") for i in hard)
        reason = pl.concat_str(
            [pl.when(pl.col(f"_c{i}")).then(pl.lit(flagged[i][0].check_id)) for i in hard],
            separator=",",
            ignore_nulls=True,
        )
        marks = masks.select(bad=bad, reason=pl.lit("failed checks: ") + reason)
        failing = marks.get_column("bad")
        rejected = reject(
            frame.filter(failing), "checks", marks.get_column("reason").filter(failing)
        )
        valid = frame.filter(~failing)
    else:
        rejected = pl.DataFrame(schema=REJECTED_SCHEMA)
        valid = frame
    total = frame.height + prior_invalid
    invalid = rejected.height + prior_invalid
    report = DataQualityReport(
        job_id=job_id,
        total_records=total,
        valid_records=valid.height,
        invalid_records=invalid,
        quality_score=valid.height / total if total else 1.0,
        validation_errors=errors,
        data_profiling=profile(frame.drop([c for c in frame.columns if c.startswith("_qv_")])),
    )
    return CheckResult(valid, rejected, report)
