"""Pipeline stages over typed batches and the runner that calls them.

acquire -> normalize -> validate -> store -> announce   (stages.py, messages.py)
"""

from quantivista.pipeline.messages import (
    Batch,
    BatchId,
    FetchFailure,
    RawBatch,
    StoredBatch,
    ValidatedBatch,
)
from quantivista.pipeline.runner import InProcessRunner
from quantivista.pipeline.stages import Progress, Sinks

__all__ = [
    "Batch",
    "BatchId",
    "FetchFailure",
    "InProcessRunner",
    "Progress",
    "RawBatch",
    "Sinks",
    "StoredBatch",
    "ValidatedBatch",
]
