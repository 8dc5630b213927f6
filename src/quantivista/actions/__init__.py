"""Corporate actions: adjustment on read, Lean factor/map files, reconciliation."""

from quantivista.actions.adjust import adjust_bars, adjustment_factors

__all__ = ["adjust_bars", "adjustment_factors"]
