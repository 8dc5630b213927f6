"""Declarative quality checks over a frame: a report, the valid rows and the dead letters.

    result = run_checks(frame, checks, job_id="j1", now=clock.now(), reference=reference)
    result.valid, result.rejected, result.report

Every row check is one Polars expression, a flag column added to the job's lazy plan
(`plan_checks`) so rules and checks run in one pass; `judge` then counts the flags, and
builds reasons only for the failing rows. A row failing an `error` check leaves `valid` for
`rejected` with every failed check named in its reason; `warning` checks only count.
`freshness` judges the whole batch (its newest value).
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
from quantivista.reporting.transform import (
    ALIVE_COLUMN,
    REJECTED_SCHEMA,
    Reference,
    collect,
    reject,
)

__all__ = [
    "PROFILE_SAMPLE",
    "CheckPlan",
    "CheckResult",
    "judge",
    "plan_checks",
    "profile",
    "repeated",
    "run_checks",
    "validate_checks",
]

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


def _failing(
    check: QualityCheck, reference: Reference, alive: pl.Expr | None = None
) -> pl.Expr | None:
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
        # the first of a value among the alive rows is kept (others hold null here)
        among = col if alive is None else pl.when(alive).then(col)
        return among.map_batches(repeated, return_dtype=pl.Boolean)
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


# types whose 64-bit hash is equal exactly when the values are (no -0.0/NaN subtleties)
_HASH_EXACT = (pl.String, pl.Date, pl.Datetime, pl.Duration, pl.Boolean, pl.Int64, pl.Int32,
               pl.Int16, pl.Int8, pl.UInt64, pl.UInt32, pl.UInt16, pl.UInt8)  # fmt: skip


def repeated(values: pl.Series) -> pl.Series:
    """Return a flag true on the non-null values that an earlier row of `values` holds.

    `is_first_distinct` on 10 M strings keeps a 10 M-entry hash table (a fifth of a job):
    here the values' 64-bit hashes are sorted instead, and only the rows whose hash is held
    twice (true repeats, and rare collisions) are compared exactly.
    """
    present = values.is_not_null()
    if not isinstance(values.dtype, _HASH_EXACT):
        return present & ~values.is_first_distinct()
    n = values.len()
    hashes = values.hash()
    seen = hashes.filter(present).sort()
    twice = seen.filter(seen == seen.shift(1))
    out = pl.Series(values.name, [], dtype=pl.Boolean).extend_constant(False, n)
    if twice.is_empty():
        return out
    rows = (present & hashes.is_in(twice.unique().implode())).arg_true()
    again = rows.filter(~values.gather(rows).is_first_distinct())
    return out.scatter(again, True) if again.len() else out


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


# a job's profile reads at most about this many rows (evenly spread) for distinct counts,
# min, max and mean: on every row they cost a tenth of a 10 M-row job
PROFILE_SAMPLE = 250_000


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


def _freshness(
    frame: pl.DataFrame, alive: pl.Expr, check: QualityCheck, now: datetime
) -> ValidationError | None:
    field = check.field or ""
    if field not in frame.columns:
        raise _fail(check, f"unknown field {field!r}")
    newest = frame.select(pl.col(field).filter(alive).max()).item()
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


@dataclass
class CheckPlan:
    """Checks added to a lazy plan: one flag column per row check (None: a batch check)."""

    frame: pl.LazyFrame
    flags: list[tuple[QualityCheck, str | None]]

    def columns(self) -> list[str]:
        """Return the flag columns the checks added."""
        return [f for _, f in self.flags if f is not None]


def plan_checks(
    frame: pl.LazyFrame, checks: Sequence[QualityCheck], reference: Reference | None = None
) -> CheckPlan:
    """Add the checks to a plan: flags true on the alive rows (`ALIVE_COLUMN`) failing them.

    Rows rules rejected are not alive: they fail no check, and do not count as the first
    of a value for `unique`. All the rows of a job are one frame, so `unique` holds across
    every batch (file, page, micro-batch) of a job.
    """
    reference = reference or Reference()
    schema = frame.collect_schema()
    validate_checks(checks, schema, reference)
    if ALIVE_COLUMN not in schema:
        frame = frame.with_columns(pl.lit(True).alias(ALIVE_COLUMN))
    alive = pl.col(ALIVE_COLUMN)
    flags: list[tuple[QualityCheck, str | None]] = []
    exprs = []
    for n, check in enumerate(checks):
        expr = _failing(check, reference, alive)
        if expr is None:
            flags.append((check, None))
            continue
        flags.append((check, f"_qv_check{n}"))
        exprs.append((alive & expr.fill_null(False)).alias(f"_qv_check{n}"))
    return CheckPlan(frame.with_columns(exprs) if exprs else frame, flags)


def judge(
    frame: pl.DataFrame,
    plan: CheckPlan,
    *,
    job_id: str,
    now: datetime,
    prior_invalid: int = 0,
    sample: int | None = PROFILE_SAMPLE,
) -> tuple[pl.Expr, pl.DataFrame, DataQualityReport]:
    """Judge a collected plan: return the expression true on valid rows, the rejected
    records (`REJECTED_SCHEMA`) and the report.

    `prior_invalid` rows were rejected upstream (by rules, not alive); the report counts
    them as invalid records too: total = valid + invalid.
    """
    alive = pl.col(ALIVE_COLUMN)
    own = [c for c in frame.columns if not c.startswith("_qv_")]
    flagged = [(c, f) for c, f in plan.flags if f is not None]
    hard = [f for c, f in flagged if c.severity is Severity.ERROR]
    bad = pl.any_horizontal(hard) if hard else pl.lit(False)
    # every count in one pass: alive rows, rows each check fails, rejected rows, nulls
    counts = frame.select(
        alive.sum().alias("_alive"),
        bad.sum().alias("_bad"),
        *(pl.col(f).sum().alias(f) for _, f in flagged),
        *((pl.col(c).is_null() & alive).sum().alias(f"{c}\x00nulls") for c in own),
    ).row(0, named=True)
    errors: list[ValidationError] = []
    for check, flag in plan.flags:
        if flag is None:
            found = _freshness(frame, alive, check, now)
            if found is not None:
                errors.append(found)
            continue
        failed = int(counts[flag])
        if not failed:
            continue
        examples = []
        if check.field is not None:
            picked = frame.select(pl.col(check.field).filter(pl.col(flag)).head(_EXAMPLES))
            examples = [_jsonable(v) for v in picked.to_series()]
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
    rejected = pl.DataFrame(schema=REJECTED_SCHEMA)
    if counts["_bad"]:
        failing = frame.filter(bad)  # reasons only for the failing rows
        reason = pl.concat_str(
            [pl.when(pl.col(f)).then(pl.lit(c.check_id)) for c, f in flagged if f in hard],
            separator=",",
            ignore_nulls=True,
        )
        rejected = reject(failing, "checks", pl.lit("failed checks: ") + reason)
    alive_rows = int(counts["_alive"] or 0)
    valid = alive_rows - rejected.height
    total = alive_rows + prior_invalid
    report = DataQualityReport(
        job_id=job_id,
        total_records=total,
        valid_records=valid,
        invalid_records=rejected.height + prior_invalid,
        quality_score=valid / total if total else 1.0,
        validation_errors=errors,
        data_profiling=_alive_profile(frame, own, counts, alive_rows, sample),
    )
    return alive & ~bad, rejected, report


def _alive_profile(
    frame: pl.DataFrame,
    own: list[str],
    counts: dict[str, Any],
    alive_rows: int,
    sample: int | None,
) -> DataProfile:
    """Profile the alive rows: exact row and null counts, the rest on a sample."""
    rows = frame.select([*own, ALIVE_COLUMN])
    if sample is not None and rows.height > sample:
        rows = rows.gather_every(-(-rows.height // sample))
    rows = rows.filter(pl.col(ALIVE_COLUMN)).drop(ALIVE_COLUMN)
    found = profile(rows)
    nulls = {c: int(counts[f"{c}\x00nulls"]) for c in own}
    columns = {c: p.model_copy(update={"null_count": nulls[c]}) for c, p in found.columns.items()}
    sampled = rows.height if rows.height < alive_rows else None
    return DataProfile(row_count=alive_rows, columns=columns, sampled_rows=sampled)


def run_checks(
    frame: pl.DataFrame,
    checks: Sequence[QualityCheck],
    *,
    job_id: str,
    now: datetime,
    reference: Reference | None = None,
    prior_invalid: int = 0,
) -> CheckResult:
    """Run the checks on a frame; `prior_invalid` rows were already rejected upstream.

    The report counts them as invalid records too: total = valid + invalid.
    """
    plan = plan_checks(frame.lazy(), checks, reference)
    out = collect(plan.frame)
    valid, rejected, report = judge(out, plan, job_id=job_id, now=now, prior_invalid=prior_invalid)
    added = [c for c in out.columns if c not in frame.columns]
    return CheckResult(out.filter(valid).drop(added), rejected, report)
