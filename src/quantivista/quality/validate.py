"""Run the rules over a batch: split it into stored rows and quarantined rows, and report."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl

from quantivista.model.jobs import DataQualityReport, Severity, ValidationIssue
from quantivista.model.schema import BAR_COLUMNS, BAR_KEY, BAR_VALUE_COLUMNS, series_in_blocks
from quantivista.model.timeframe import Timeframe
from quantivista.quality.rules import DEFAULT_RULES, Rule
from quantivista.reference.calendars import TradingCalendar

__all__ = ["ValidationResult", "Validator"]

MAX_ISSUES_PER_RULE = 50


@dataclass(slots=True)
class ValidationResult:
    """The outcome of validating one batch."""

    clean: pl.DataFrame  # canonical schema, quality_flags set for soft findings
    rejected: pl.DataFrame  # canonical schema plus rule, severity, reason
    report: DataQualityReport
    exact_duplicates: int = 0
    issues: list[ValidationIssue] = field(default_factory=list)


class Validator:
    """Validate canonical bar batches against a set of rules and an exchange calendar.

    With `calendar=None` the calendar rules (sessions, alignment to session grids,
    missing sessions) are skipped, for instruments that trade around the clock.
    """

    def __init__(
        self, calendar: TradingCalendar | None, rules: tuple[Rule, ...] = DEFAULT_RULES
    ) -> None:
        self.calendar = calendar
        self.rules = rules

    def validate(self, bars: pl.DataFrame, *, job_id: str) -> ValidationResult:
        """Check `bars` (canonical schema) and return clean rows, rejected rows and a report."""
        total = bars.height
        if series_in_blocks(bars, ("symbol", "timeframe")):
            # the usual case (one provider, sorted series): no key repeats, skip hashing
            deduped, exact_dupes = bars.with_columns(_dup_conflict=pl.lit(False)), 0
        else:
            # identical repeated rows carry no information: keep one and count the rest
            deduped = bars.unique(
                subset=[*BAR_KEY, *BAR_VALUE_COLUMNS], keep="first", maintain_order=True
            )
            exact_dupes = total - deduped.height
            deduped = deduped.with_columns(_dup_conflict=pl.len().over(BAR_KEY) > 1)
        ctx = self._with_context(deduped)
        rules = [r for r in self.rules if all(n in ctx.columns for n in r.needs)]
        checked = ctx.with_columns([r.expr() for r in rules])
        flag_bits = pl.sum_horizontal(
            [
                pl.when(pl.col(r.name)).then(pl.lit(int(r.flag), pl.UInt32)).otherwise(0)
                for r in rules
            ]
        ).cast(pl.UInt32)
        errors = [r for r in rules if r.severity is Severity.ERROR]
        checked = checked.with_columns(
            quality_flags=pl.col("quality_flags") | flag_bits,
            _rejected=pl.any_horizontal([pl.col(r.name) for r in errors])
            if errors
            else pl.lit(False),
        )
        counts_row = checked.select([pl.col(r.name).sum() for r in rules]).row(0)
        rule_counts = {r.name: int(n) for r, n in zip(rules, counts_row, strict=True) if n}
        if exact_dupes:
            rule_counts["duplicate"] = exact_dupes

        rejected = self._rejected_rows(checked, errors)
        clean = checked.filter(~pl.col("_rejected")).select(BAR_COLUMNS)
        issues = self._row_issues(checked, rules)
        # a rejected bar did arrive: only bars that never came count as missing
        missing = self._missing_bars(deduped)
        if missing.height:
            rule_counts["missing_bar"] = missing.height
            issues.extend(
                ValidationIssue(
                    symbol=s,
                    ts=t,
                    rule="missing_bar",
                    severity=Severity.WARNING,
                    message="the calendar expects a bar here but none arrived",
                )
                for s, t in missing.head(MAX_ISSUES_PER_RULE * 4).iter_rows()
            )
        soft = clean.filter(pl.col("quality_flags") != 0).height
        denominator = total - exact_dupes + missing.height
        score = 1.0 if denominator == 0 else (clean.height - 0.5 * soft) / denominator
        report = DataQualityReport(
            job_id=job_id,
            total_records=total,
            valid_records=clean.height + exact_dupes,
            invalid_records=rejected.height,
            quality_score=min(1.0, max(0.0, score)),
            validation_errors=issues,
            rule_counts=rule_counts,
            issue_count=sum(rule_counts.values()),
            data_profiling=profile(bars),
        )
        return ValidationResult(clean, rejected, report, exact_dupes, issues)

    # -- context columns -------------------------------------------------------------------
    def _with_context(self, df: pl.DataFrame) -> pl.DataFrame:
        if df.is_empty():
            return df
        first_tf = df["timeframe"][0]
        if df.select((pl.col("timeframe") == first_tf).all()).item():
            return self._grid_context(df, Timeframe.parse(str(first_tf)))
        parts = []
        for (tf_text,), part in df.group_by("timeframe", maintain_order=True):
            parts.append(self._grid_context(part, Timeframe.parse(str(tf_text))))
        return pl.concat(parts, how="diagonal_relaxed") if len(parts) > 1 else parts[0]

    def _grid_context(self, df: pl.DataFrame, tf: Timeframe) -> pl.DataFrame:
        cal = self.calendar
        if not tf.is_intraday:
            aligned = pl.col("ts").dt.truncate("1d") == pl.col("ts")
            if cal is None or str(tf) != "1d":
                return df.with_columns(_aligned=aligned)
            sessions = cal.schedule["session"]
            return df.with_columns(
                _aligned=aligned,
                _is_session=pl.col("ts").dt.date().is_in(sessions.implode()),
            )
        step = tf.seconds
        assert step is not None
        if cal is None:
            return df.with_columns(
                _aligned=pl.col("ts").dt.truncate(tf.polars_every) == pl.col("ts")
            )
        local_day = cal.session_of(pl.col("ts")).alias("_day")
        joined = df.with_columns(local_day).join(
            cal.schedule.select(
                pl.col("session").alias("_day"),
                pl.col("open").alias("_open"),
                pl.col("close").alias("_close"),
            ),
            on="_day",
            how="left",
        )
        offset_s = (pl.col("ts") - pl.col("_open")).dt.total_seconds()
        return joined.with_columns(
            _is_session=pl.col("_open").is_not_null(),
            _in_hours=(pl.col("ts") >= pl.col("_open")) & (pl.col("ts") < pl.col("_close")),
            # outside regular hours there is no session grid to check against
            _aligned=pl.when(pl.col("ts") >= pl.col("_open"))
            .then(offset_s % step == 0)
            .otherwise(pl.col("ts").dt.truncate(tf.polars_every) == pl.col("ts")),
        ).drop("_day", "_open", "_close")

    # -- outputs ---------------------------------------------------------------------------
    @staticmethod
    def _rejected_rows(checked: pl.DataFrame, errors: list[Rule]) -> pl.DataFrame:
        bad = checked.filter(pl.col("_rejected"))
        if not errors:
            return bad.select(BAR_COLUMNS).with_columns(
                rule=pl.lit(None, pl.String),
                severity=pl.lit(None, pl.String),
                reason=pl.lit(None, pl.String),
            )
        return bad.select(
            *BAR_COLUMNS,
            rule=pl.concat_str(
                [pl.when(pl.col(r.name)).then(pl.lit(r.name)) for r in errors],
                separator=",",
                ignore_nulls=True,
            ),
            severity=pl.lit(Severity.ERROR.value),
            reason=pl.concat_str(
                [pl.when(pl.col(r.name)).then(pl.lit(r.message)) for r in errors],
                separator="; ",
                ignore_nulls=True,
            ),
        )

    @staticmethod
    def _row_issues(checked: pl.DataFrame, rules: list[Rule]) -> list[ValidationIssue]:
        issues: list[ValidationIssue] = []
        for rule in rules:
            hits = (
                checked.filter(pl.col(rule.name)).select("symbol", "ts").head(MAX_ISSUES_PER_RULE)
            )
            issues.extend(
                ValidationIssue(
                    symbol=s, ts=t, rule=rule.name, severity=rule.severity, message=rule.message
                )
                for s, t in hits.iter_rows()
            )
        return issues

    def _missing_bars(self, clean: pl.DataFrame) -> pl.DataFrame:
        """Return (symbol, ts) of expected bars absent between each series' first and last bar.

        Only gaps inside the delivered span count: a series starting late (listing) or
        ending early (delisting) is not incomplete.
        """
        empty = pl.DataFrame(schema={"symbol": pl.String, "ts": pl.Datetime("us", "UTC")})
        cal = self.calendar
        if cal is None or clean.is_empty():
            return empty
        out = [empty]
        for (tf_text,), part in clean.group_by("timeframe", maintain_order=True):
            tf = Timeframe.parse(str(tf_text))
            if not (tf.is_intraday or str(tf) == "1d"):
                continue
            out.append(self._missing_for(part, tf, cal))
        return pl.concat(out)

    @staticmethod
    def _missing_for(part: pl.DataFrame, tf: Timeframe, cal: TradingCalendar) -> pl.DataFrame:
        none = pl.DataFrame(schema={"symbol": pl.String, "ts": pl.Datetime("us", "UTC")})
        bounds = part.select(lo=pl.col("ts").min(), hi=pl.col("ts").max()).row(0)
        lo_d = max(bounds[0].date(), cal.first_session)
        hi_d = min(bounds[1].date(), cal.last_session)
        if hi_d < lo_d:
            return none
        grid = cal.bar_starts(lo_d, hi_d, tf)
        # bars off the session grid (pre/post market) must not make up for missing ones
        on_grid = part.join(grid.to_frame(), on="ts", how="semi")
        if on_grid.is_empty():
            return none
        spans = on_grid.group_by("symbol").agg(
            first=pl.col("ts").min(), last=pl.col("ts").max(), n=pl.col("ts").n_unique()
        )
        grid_us = grid.dt.epoch("us").to_numpy()
        first_us = spans["first"].dt.epoch("us").to_numpy()
        last_us = spans["last"].dt.epoch("us").to_numpy()
        expected = np.searchsorted(grid_us, last_us, side="right") - np.searchsorted(
            grid_us, first_us, side="left"
        )
        short = spans.with_columns(expected=pl.Series(expected)).filter(
            pl.col("expected") > pl.col("n")
        )
        if short.is_empty():
            return pl.DataFrame(schema={"symbol": pl.String, "ts": pl.Datetime("us", "UTC")})
        grid_df = pl.DataFrame({"ts": grid})
        wanted = (
            short.select("symbol", "first", "last")
            .join(grid_df, how="cross")
            .filter(pl.col("ts").is_between(pl.col("first"), pl.col("last")))
            .select("symbol", "ts")
        )
        return wanted.join(part.select("symbol", "ts"), on=["symbol", "ts"], how="anti").sort(
            "symbol", "ts"
        )


def profile(df: pl.DataFrame) -> dict[str, Any]:
    """Return a small profile of a bar batch: shape, time span and per-column statistics."""
    if df.is_empty():
        return {"rows": 0}
    numeric = ["open", "high", "low", "close", "volume"]
    stats = df.select(
        *[pl.col(c).min().alias(f"{c}:min") for c in numeric],
        *[pl.col(c).max().alias(f"{c}:max") for c in numeric],
        *[pl.col(c).mean().alias(f"{c}:mean") for c in numeric],
        *[pl.col(c).null_count().alias(f"{c}:nulls") for c in (*numeric, "vwap", "trades")],
        symbols=pl.col("symbol").n_unique(),
        first_ts=pl.col("ts").min(),
        last_ts=pl.col("ts").max(),
    ).row(0, named=True)
    columns: dict[str, dict[str, Any]] = {}
    for key, value in stats.items():
        if ":" in key:
            col, stat = key.split(":")
            columns.setdefault(col, {})[stat] = _plain(value)
    return {
        "rows": df.height,
        "symbols": stats["symbols"],
        "timeframes": sorted(df["timeframe"].unique().to_list()),
        "first_ts": _plain(stats["first_ts"]),
        "last_ts": _plain(stats["last_ts"]),
        "columns": columns,
    }


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
