"""PromQL read by the platform itself: which metrics an expression uses.

Parsing is promql-parser's (a binding of the Rust parser Greptime maintains): hand-written
regular expressions miss label sets, strings and functions that look like names.
"""

from __future__ import annotations

import promql_parser

from quantivista.errors import ConfigurationError

__all__ = ["metric_names", "parse"]


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
