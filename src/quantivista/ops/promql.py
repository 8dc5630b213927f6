"""PromQL read by the platform itself: which metrics an expression uses, and its value over
the samples one process kept (the in-process alerting of the embedded default).

Parsing is promql-parser's (a binding of the Rust parser Greptime maintains): hand-written
regular expressions miss label sets, strings and functions that look like names.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable

import promql_parser

from quantivista.errors import ConfigurationError

__all__ = ["History", "Labels", "Vector", "evaluate", "labels_of", "metric_names", "parse",
           "unsupported"]  # fmt: skip


def parse(expr: str) -> promql_parser.Expr:
    """Parse a PromQL expression; a bad one raises `ConfigurationError` with the reason."""
    try:
        return promql_parser.parse(expr)
    except Exception as exc:  # the binding raises a bare ValueError/RuntimeError
        raise ConfigurationError(f"not valid PromQL: {exc}", expr=expr) from None


def metric_names(expr: str) -> set[str]:
    """Return the metric names an expression selects (`up{job="x"}` -> {"up"})."""
    names: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(parse(expr), visit, None)
    return names


# -- evaluation over an in-process sample history -------------------------------------------
# The subset of PromQL the alert rules use, with Prometheus' semantics: a 5-minute lookback
# for instant selectors, extrapolated rate/increase, histogram_quantile by linear
# interpolation, aggregation by/without, one-to-one and set matching with on/ignoring.
Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs, "__name__" included
Vector = dict[Labels, float]
Value = float | Vector
LOOKBACK_S = 300.0
FUNCTIONS = {"rate", "increase", "time", "histogram_quantile", "max_over_time",
             "min_over_time", "avg_over_time", "abs", "absent"}  # fmt: skip
AGGREGATIONS = {"sum", "min", "max", "avg", "count"}


def labels_of(mapping: dict[str, str]) -> Labels:
    """Return a label set in the evaluator's form."""
    return tuple(sorted(mapping.items()))


def unsupported(expr: str) -> list[str]:
    """Return the functions and aggregations of `expr` the evaluator lacks (empty: all fine)."""
    missing: list[str] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.Call) and node.func.name not in FUNCTIONS:
            missing.append(node.func.name)
        elif isinstance(node, promql_parser.AggregateExpr) and str(node.op) not in AGGREGATIONS:
            missing.append(str(node.op))
        elif isinstance(node, promql_parser.SubqueryExpr):
            missing.append("subquery")

    promql_parser.walk(parse(expr), visit, None)
    return missing


class History:
    """Snapshots of every series (time, {labels: value}), oldest first, trimmed to `keep_s`."""

    def __init__(self, keep_s: float = 3600.0) -> None:
        self.keep_s = keep_s
        self.snapshots: list[tuple[float, Vector]] = []
        # the rules of one evaluation select from the same instants and windows: kept until
        # the next scrape
        self._instants: dict[float, Vector] = {}
        self._windows: dict[tuple[float, float], dict[Labels, list[tuple[float, float]]]] = {}

    def add(self, t: float, samples: Vector) -> None:
        """Append one scrape at `t` (Unix seconds, not earlier than the last)."""
        self.snapshots.append((t, samples))
        while self.snapshots and self.snapshots[0][0] < t - self.keep_s:
            self.snapshots.pop(0)
        self._instants.clear()
        self._windows.clear()

    def instant(self, t: float) -> Vector:
        """Return each series' latest value within the lookback before `t`."""
        kept = self._instants.get(t)
        if kept is None:
            kept = self._instants[t] = self._instant(t)
        return kept

    def _instant(self, t: float) -> Vector:
        out: Vector = {}
        for at, samples in reversed(self.snapshots):
            if at > t:
                continue
            if at <= t - LOOKBACK_S:
                break
            for key, value in samples.items():
                out.setdefault(key, value)
        return out

    def window(self, t: float, range_s: float) -> dict[Labels, list[tuple[float, float]]]:
        """Return each series' points in (t - range_s, t], oldest first."""
        kept = self._windows.get((t, range_s))
        if kept is None:
            kept = self._windows[t, range_s] = self._window(t, range_s)
        return kept

    def _window(self, t: float, range_s: float) -> dict[Labels, list[tuple[float, float]]]:
        out: dict[Labels, list[tuple[float, float]]] = {}
        for at, samples in self.snapshots:
            if t - range_s < at <= t:
                for key, value in samples.items():
                    out.setdefault(key, []).append((at, value))
        return out


def evaluate(expr: str | promql_parser.Expr, history: History, t: float) -> Value:
    """Evaluate `expr` at `t` over `history`: a scalar or an instant vector."""
    node = parse(expr) if isinstance(expr, str) else expr
    return _Eval(history, t).eval(node)


def _name(labels: Labels) -> str:
    return dict(labels).get("__name__", "")


def _without(labels: Labels, names: set[str]) -> Labels:
    return tuple((k, v) for k, v in labels if k not in names)


def _only(labels: Labels, names: set[str]) -> Labels:
    return tuple((k, v) for k, v in labels if k in names)


_Matcher = tuple[str, promql_parser.MatchOp, str]


def _matches(labels: Labels, matchers: list[_Matcher]) -> bool:
    have = dict(labels)
    for name, op, wanted in matchers:
        value = have.get(name, "")
        if op == promql_parser.MatchOp.Equal:
            ok = value == wanted
        elif op == promql_parser.MatchOp.NotEqual:
            ok = value != wanted
        elif op == promql_parser.MatchOp.Re:
            ok = re.fullmatch(wanted, value) is not None
        else:
            ok = re.fullmatch(wanted, value) is None
        if not ok:
            return False
    return True


def _extrapolated(
    points: list[tuple[float, float]], start: float, end: float, counter: bool, rate: bool
) -> float | None:
    """Prometheus' extrapolatedRate: the increase over the window, extrapolated to its edges."""
    if len(points) < 2:
        return None
    result = points[-1][1] - points[0][1]
    if counter:
        result += sum(a for (_, a), (_, b) in itertools.pairwise(points) if b < a)
    to_start, to_end = points[0][0] - start, end - points[-1][0]
    sampled = points[-1][0] - points[0][0]
    average = sampled / (len(points) - 1)
    if counter and result > 0 and points[0][1] >= 0:
        to_start = min(to_start, sampled * (points[0][1] / result))
    threshold = average * 1.1
    span = sampled
    span += to_start if to_start < threshold else average / 2
    span += to_end if to_end < threshold else average / 2
    result *= span / sampled
    return result / (end - start) if rate else result


def _bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' bucketQuantile over (upper bound, cumulative count) pairs."""
    buckets.sort()
    if q < 0:
        return float("-inf")
    if q > 1:
        return float("inf")
    if len(buckets) < 2 or buckets[-1][0] != float("inf"):
        return float("nan")
    total = buckets[-1][1]
    if total == 0:
        return float("nan")
    rank = q * total
    b = next(i for i, (_, count) in enumerate(buckets) if count >= rank)
    if b == len(buckets) - 1:
        return buckets[-2][0]
    if b == 0 and buckets[0][0] <= 0:
        return buckets[0][0]
    start, below = (0.0, 0.0) if b == 0 else buckets[b - 1]
    end, count = buckets[b]
    return start + (end - start) * ((rank - below) / (count - below))


_ARITH: dict[str, Callable[[float, float], float]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b if b else (math.nan if a == 0 else math.copysign(math.inf, a)),
    "%": lambda a, b: math.fmod(a, b) if b else math.nan,
    "^": lambda a, b: a**b,
}
_FOLDS: dict[str, Callable[[list[float]], float]] = {
    "sum": lambda xs: float(sum(xs)),
    "min": min,
    "max": max,
    "count": lambda xs: float(len(xs)),
    "avg": lambda xs: sum(xs) / len(xs),
}
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
}


class _Eval:
    def __init__(self, history: History, t: float) -> None:
        self.history = history
        self.t = t

    def eval(self, node: promql_parser.Expr) -> Value:
        if isinstance(node, promql_parser.NumberLiteral):
            return float(node.val)
        if isinstance(node, promql_parser.ParenExpr):
            return self.eval(node.expr)
        if isinstance(node, promql_parser.UnaryExpr):
            inner = self.eval(node.expr)
            if isinstance(inner, float):
                return -inner
            return {_without(k, {"__name__"}): -v for k, v in inner.items()}
        if isinstance(node, promql_parser.VectorSelector):
            return self.select(node)
        if isinstance(node, promql_parser.Call):
            return self.call(node)
        if isinstance(node, promql_parser.AggregateExpr):
            return self.aggregate(node)
        if isinstance(node, promql_parser.BinaryExpr):
            return self.binary(node)
        raise ConfigurationError("PromQL the in-process evaluator does not support", expr=str(node))

    def _selector(self, vs: promql_parser.VectorSelector) -> list[_Matcher]:
        matchers = [(m.name, m.op, m.value) for m in vs.matchers.matchers]
        if vs.name:
            matchers.append(("__name__", promql_parser.MatchOp.Equal, vs.name))
        return matchers

    def select(self, vs: promql_parser.VectorSelector) -> Vector:
        matchers = self._selector(vs)
        return {k: v for k, v in self.history.instant(self.t).items() if _matches(k, matchers)}

    def matrix(
        self, node: promql_parser.Expr
    ) -> tuple[dict[Labels, list[tuple[float, float]]], float]:
        if not isinstance(node, promql_parser.MatrixSelector):
            raise ConfigurationError("a range vector is needed here", expr=str(node))
        range_s = node.range.total_seconds()
        matchers = self._selector(node.vector_selector)
        window = self.history.window(self.t, range_s)
        return {k: pts for k, pts in window.items() if _matches(k, matchers)}, range_s

    def call(self, node: promql_parser.Call) -> Value:
        name = node.func.name
        if name == "time":
            return self.t
        if name in ("rate", "increase"):
            series, range_s = self.matrix(node.args[0])
            out: Vector = {}
            for key, points in series.items():
                value = _extrapolated(points, self.t - range_s, self.t, True, name == "rate")
                if value is not None:
                    out[_without(key, {"__name__"})] = value
            return out
        if name.endswith("_over_time"):
            series, _ = self.matrix(node.args[0])
            pick = _FOLDS[name.removesuffix("_over_time")]
            return {_without(k, {"__name__"}): pick([v for _, v in p]) for k, p in series.items()}
        if name == "abs":
            inner = self.eval(node.args[0])
            assert isinstance(inner, dict)
            return {_without(k, {"__name__"}): abs(v) for k, v in inner.items()}
        if name == "absent":
            inner = self.eval(node.args[0])
            return {} if inner else {(): 1.0}
        if name == "histogram_quantile":
            q = self.eval(node.args[0])
            inner = self.eval(node.args[1])
            assert isinstance(q, float) and isinstance(inner, dict)
            groups: dict[Labels, list[tuple[float, float]]] = {}
            for key, value in inner.items():
                le = dict(key).get("le")
                if le is not None:
                    groups.setdefault(_without(key, {"le", "__name__"}), []).append(
                        (float(le), value)
                    )
            return {k: _bucket_quantile(q, b) for k, b in groups.items()}
        raise ConfigurationError(f"PromQL function {name} is not supported in-process")

    def aggregate(self, node: promql_parser.AggregateExpr) -> Vector:
        inner = self.eval(node.expr)
        assert isinstance(inner, dict)
        mod = node.modifier
        names = set(mod.labels) if mod is not None else set()
        by = mod is None or mod.type == promql_parser.AggModifierType.By
        groups: dict[Labels, list[float]] = {}
        for key, value in inner.items():
            group = _only(key, names) if by else _without(key, names | {"__name__"})
            groups.setdefault(group, []).append(value)
        op = str(node.op)
        fold = _FOLDS[op]
        return {k: fold(v) for k, v in groups.items()}

    def binary(self, node: promql_parser.BinaryExpr) -> Value:
        op = str(node.op)
        lhs, rhs = self.eval(node.lhs), self.eval(node.rhs)
        mod = node.modifier
        want_bool = bool(mod is not None and mod.return_bool)
        if isinstance(lhs, float) and isinstance(rhs, float):
            if op in _COMPARE:
                return 1.0 if _COMPARE[op](lhs, rhs) else 0.0
            return _ARITH[op](lhs, rhs)
        if isinstance(lhs, float) or isinstance(rhs, float):
            return self._with_scalar(op, lhs, rhs, want_bool)
        matching = mod.matching if mod is not None else None
        on = matching is not None and matching.type == promql_parser.LabelModifierType.Include
        names = set(matching.labels) if matching is not None else set()

        def signature(key: Labels) -> Labels:
            return _only(key, names) if on else _without(key, names | {"__name__"})

        if op in ("and", "or", "unless"):
            right = {signature(k) for k in rhs}
            if op == "and":
                return {k: v for k, v in lhs.items() if signature(k) in right}
            if op == "unless":
                return {k: v for k, v in lhs.items() if signature(k) not in right}
            left = {signature(k) for k in lhs}
            return {**lhs, **{k: v for k, v in rhs.items() if signature(k) not in left}}
        by_sig = {signature(k): v for k, v in rhs.items()}
        out: Vector = {}
        for key, a in lhs.items():
            b = by_sig.get(signature(key))
            if b is None:
                continue
            result = signature(key) if on else _without(key, names | {"__name__"})
            if op in _COMPARE:
                hit = _COMPARE[op](a, b)
                if want_bool:
                    out[result] = 1.0 if hit else 0.0
                elif hit:
                    out[key if not on else result] = a
            else:
                out[result] = _ARITH[op](a, b)
        return out

    @staticmethod
    def _with_scalar(op: str, lhs: Value, rhs: Value, want_bool: bool) -> Vector:
        vector = lhs if isinstance(lhs, dict) else rhs
        assert isinstance(vector, dict)
        out: Vector = {}
        for key, v in vector.items():
            a, b = (v, rhs) if isinstance(lhs, dict) else (lhs, v)
            assert isinstance(a, float) and isinstance(b, float)
            if op in _COMPARE:
                hit = _COMPARE[op](a, b)
                if want_bool:
                    out[_without(key, {"__name__"})] = 1.0 if hit else 0.0
                elif hit:
                    out[key] = v
            else:
                out[_without(key, {"__name__"})] = _ARITH[op](a, b)
        return out
