"""Reconcile corporate actions reported by several sources into one set of events.

Events of one symbol and kind (splits and stock dividends; cash dividends; each other
type) whose ex-dates lie within `date_tolerance_days` of each other are one cluster. A
cluster becomes one event, valued by the source that comes first in `priority`; sources
whose value (ratio, amount or successor) differs beyond `value_tolerance` (relative) are
reported as conflicts, and so are clusters whose sources disagree on the ex-date.
All of it is sorting, gap clustering (`cum_sum`) and group-bys, no row loops.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from quantivista.model.schema import ACTION_COLUMNS, ACTION_POLARS_SCHEMA, FrameLike, coerce_actions

__all__ = ["ActionPlan", "ReconcileReport", "plan_action_ingest", "reconcile_actions"]

_KIND = (
    pl.when(pl.col("action_type").is_in(["split", "stock_dividend"]))
    .then(pl.lit("ratio"))
    .when(pl.col("action_type").is_in(["dividend", "special_dividend"]))
    .then(pl.lit("cash"))
    .otherwise(pl.col("action_type"))
)
_VALUE = pl.coalesce("ratio", "amount")


@dataclass(frozen=True)
class ReconcileReport:
    """Reconciled events, the conflicts found, and how many events were new in the store."""

    events: pl.DataFrame
    conflicts: pl.DataFrame
    new: int = 0


def _clusters(df: pl.DataFrame, tolerance_days: int) -> pl.DataFrame:
    df = df.with_columns(_kind=_KIND).sort("symbol", "_kind", "ex_date")
    gap = (pl.col("ex_date") - pl.col("ex_date").shift(1)).dt.total_days()
    new_cluster = (
        (pl.col("symbol") != pl.col("symbol").shift(1))
        | (pl.col("_kind") != pl.col("_kind").shift(1))
        | (gap > tolerance_days)
    ).fill_null(True)
    return df.with_columns(_cluster=new_cluster.cum_sum())


def reconcile_actions(
    sources: Mapping[str, FrameLike] | Sequence[FrameLike],
    *,
    priority: Sequence[str] | None = None,
    date_tolerance_days: int = 3,
    value_tolerance: float = 1e-3,
) -> ReconcileReport:
    """Merge actions from several sources; return the events and the conflicts.

    `sources` maps a source name to its frame (or is a list of frames whose `provider`
    column names the source). `priority` orders sources (default: the order given).
    Conflicts have columns symbol, kind, ex_date, provider, value, chosen_provider,
    chosen_value, problem ("value" or "date").
    """
    if isinstance(sources, Mapping):
        frames = [
            coerce_actions(f).with_columns(provider=pl.lit(name)) for name, f in sources.items()
        ]
        order = list(priority or sources.keys())
    else:
        frames = [coerce_actions(f) for f in sources]
        order = list(priority or [])
    if not frames:
        empty = pl.DataFrame(schema=ACTION_POLARS_SCHEMA)
        return ReconcileReport(empty, _no_conflicts())
    all_rows = pl.concat(frames).with_columns(pl.col("provider").fill_null("unknown"))
    names = list(dict.fromkeys([*order, *all_rows["provider"].unique(maintain_order=True)]))
    rank = {name: i for i, name in enumerate(names)}
    df = _clusters(all_rows, date_tolerance_days).with_columns(
        _rank=pl.col("provider").replace_strict(rank, return_dtype=pl.Int32),
        _value=_VALUE,
    )
    chosen = df.sort("_cluster", "_rank").group_by("_cluster", maintain_order=True).first()
    events = chosen.select(ACTION_COLUMNS).sort("symbol", "ex_date", "action_type")
    compare = df.join(
        chosen.select(
            "_cluster",
            chosen_provider="provider",
            chosen_value="_value",
            chosen_date="ex_date",
            chosen_new="new_symbol",
        ),
        on="_cluster",
    )
    value_off = (
        (pl.col("_value") - pl.col("chosen_value")).abs()
        > value_tolerance * pl.col("chosen_value").abs()
    ).fill_null(pl.col("_value").is_null() != pl.col("chosen_value").is_null()) | (
        ~pl.col("new_symbol").eq_missing(pl.col("chosen_new"))
    )
    conflicts = (
        compare.with_columns(
            problem=pl.when(value_off)
            .then(pl.lit("value"))
            .when(pl.col("ex_date") != pl.col("chosen_date"))
            .then(pl.lit("date"))
            .otherwise(None)
        )
        .filter(pl.col("problem").is_not_null())
        .select(
            "symbol",
            kind="_kind",
            ex_date="ex_date",
            provider="provider",
            value="_value",
            chosen_provider="chosen_provider",
            chosen_value="chosen_value",
            chosen_date="chosen_date",
            problem="problem",
        )
        .sort("symbol", "ex_date", "provider")
    )
    return ReconcileReport(events, conflicts)


def _no_conflicts() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "symbol": pl.String(),
            "kind": pl.String(),
            "ex_date": pl.Date(),
            "provider": pl.String(),
            "value": pl.Float64(),
            "chosen_provider": pl.String(),
            "chosen_value": pl.Float64(),
            "chosen_date": pl.Date(),
            "problem": pl.String(),
        }
    )


@dataclass(frozen=True)
class ActionPlan:
    """What an action ingest should store: the new events, with the reconciliation behind it."""

    events: pl.DataFrame
    conflicts: pl.DataFrame
    fresh: pl.DataFrame

    def report(self, new: int) -> ReconcileReport:
        """Return the report once `new` events were stored."""
        return ReconcileReport(self.events, self.conflicts, new=new)


def plan_action_ingest(
    stored_for: Callable[[list[str]], pl.DataFrame],
    sources: Mapping[str, FrameLike] | Sequence[FrameLike],
    *,
    priority: Sequence[str] | None = None,
    date_tolerance_days: int = 3,
    value_tolerance: float = 1e-3,
) -> ActionPlan:
    """Reconcile `sources` with each other and with the stored events (`stored_for(symbols)`).

    An incoming event that matches a stored one (same symbol and kind, ex-date within the
    tolerance) is not new, whatever its source; if its value differs it is reported as a
    conflict against the stored event. The caller stores `fresh` and announces it.
    """
    report = reconcile_actions(
        sources,
        priority=priority,
        date_tolerance_days=date_tolerance_days,
        value_tolerance=value_tolerance,
    )
    incoming = report.events
    if incoming.is_empty():
        return ActionPlan(report.events, report.conflicts, incoming)
    stored = stored_for(incoming["symbol"].unique().to_list())
    if stored.is_empty():
        return ActionPlan(report.events, report.conflicts, incoming)
    # stored events rank first: they are what readers already see
    both = reconcile_actions(
        [
            stored.with_columns(provider=pl.lit("~stored")),
            incoming.with_columns(provider=pl.lit("~incoming")),
        ],
        priority=["~stored", "~incoming"],
        date_tolerance_days=date_tolerance_days,
        value_tolerance=value_tolerance,
    )
    fresh = incoming.join(
        both.events.filter(pl.col("provider") == "~incoming").select(
            "symbol", "action_type", "ex_date"
        ),
        on=["symbol", "action_type", "ex_date"],
        how="semi",
    )
    against = both.conflicts.filter(pl.col("problem") == "value").with_columns(
        provider=pl.lit("incoming"), chosen_provider=pl.lit("stored")
    )
    return ActionPlan(report.events, pl.concat([report.conflicts, against]), fresh)
