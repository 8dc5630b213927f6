"""User business rules from a TOML file: value ranges, allowed symbols, maximum gaps.

    [[range]]                 # one table per range; min and/or max, bounds included
    column = "close"
    min = 0.5
    max = 10000
    symbols = ["AAPL"]        # optional: only these symbols
    severity = "error"        # "error" quarantines, "warning" (default) flags

    [allowed_symbols]
    symbols = ["AAPL", "MSFT"]
    severity = "error"

    [[max_gap]]               # time between consecutive bars of a series
    max = "5d"                # <number><s|m|h|d>
    timeframe = "1d"          # optional: only bars of this timeframe
    severity = "warning"

Every rule sets the BUSINESS_RULE flag bit and is named `range:<column>`,
`allowed_symbols` or `max_gap:<max>` in reports and quarantine.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from quantivista.errors import ConfigurationError
from quantivista.model.flags import QualityFlag
from quantivista.model.jobs import Severity
from quantivista.model.schema import BAR_POLARS_SCHEMA
from quantivista.quality.rules import Rule

__all__ = ["load_rules", "parse_rules"]

_NUMERIC = tuple(c for c, t in BAR_POLARS_SCHEMA.items() if t.is_numeric() and c != "quality_flags")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    severity: Literal["error", "warning"] = "warning"


class _Range(_Base):
    column: str
    min: float | None = None
    max: float | None = None
    symbols: list[str] | None = None

    @model_validator(mode="after")
    def _check(self) -> _Range:
        if self.column not in _NUMERIC:
            raise ValueError(f"column must be one of {', '.join(_NUMERIC)}")
        if self.min is None and self.max is None:
            raise ValueError("a range needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is above max")
        return self


class _Allowed(_Base):
    symbols: list[str] = Field(min_length=1)


class _MaxGap(_Base):
    max: str
    timeframe: str | None = None

    @property
    def seconds(self) -> float:
        m = _DURATION.match(self.max)
        assert m is not None
        return float(m.group(1)) * _UNIT_S[m.group(2)]

    @model_validator(mode="after")
    def _check(self) -> _MaxGap:
        if not _DURATION.match(self.max):
            raise ValueError("max must look like 90s, 15m, 2h or 5d")
        return self


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    range: list[_Range] = Field(default_factory=list)
    allowed_symbols: _Allowed | None = None
    max_gap: list[_MaxGap] = Field(default_factory=list)


def _range_rule(spec: _Range) -> Rule:
    col = pl.col(spec.column)

    def violation() -> pl.Expr:
        out = pl.lit(False)
        if spec.min is not None:
            out = out | (col < spec.min)
        if spec.max is not None:
            out = out | (col > spec.max)
        if spec.symbols:
            out = out & pl.col("symbol").is_in(spec.symbols)
        return out

    bounds = (
        f"[{'-inf' if spec.min is None else spec.min}, {'inf' if spec.max is None else spec.max}]"
    )
    return Rule(f"range:{spec.column}", QualityFlag.BUSINESS_RULE, Severity(spec.severity),
                f"{spec.column} outside {bounds}", violation)  # fmt: skip


def _allowed_rule(spec: _Allowed) -> Rule:
    allowed = list(spec.symbols)
    return Rule(
        "allowed_symbols",
        QualityFlag.BUSINESS_RULE,
        Severity(spec.severity),
        "symbol is not in the allowed list",
        lambda: ~pl.col("symbol").is_in(allowed),
    )


def _gap_rule(spec: _MaxGap) -> Rule:
    limit = spec.seconds
    tf = spec.timeframe

    def violation() -> pl.Expr:
        hit = pl.col("_gap_s") > limit
        return hit & (pl.col("timeframe") == tf) if tf else hit

    return Rule(f"max_gap:{spec.max}", QualityFlag.BUSINESS_RULE, Severity(spec.severity),
                f"more than {spec.max} since the previous bar of the series", violation,
                ("_gap_s",))  # fmt: skip


def parse_rules(data: dict[str, Any]) -> tuple[Rule, ...]:
    """Return the rules described by a parsed TOML document, or raise ConfigurationError."""
    try:
        spec = _File.model_validate(data)
    except ValidationError as exc:
        raise ConfigurationError(f"invalid business rules: {exc}") from exc
    rules = [_range_rule(r) for r in spec.range]
    if spec.allowed_symbols is not None:
        rules.append(_allowed_rule(spec.allowed_symbols))
    rules.extend(_gap_rule(g) for g in spec.max_gap)
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise ConfigurationError("business rule names repeat", names=names)
    return tuple(rules)


def load_rules(path: str | Path) -> tuple[Rule, ...]:
    """Load business rules from a TOML file (see the module docstring for the format)."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError("cannot read the business rules file", path=str(path)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"business rules file is not valid TOML: {exc}",
                                 path=str(path)) from exc  # fmt: skip
    return parse_rules(data)
