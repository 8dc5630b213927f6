"""Processing: normalization of provider data, cross-provider consensus, gap filling."""

from quantivista.processing.gaps import fill_gaps
from quantivista.processing.reconcile import Consensus, reconcile

__all__ = ["Consensus", "fill_gaps", "reconcile"]
