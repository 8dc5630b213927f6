"""Ingestion jobs and the write path."""

from quantivista.pipeline.ingest import Ingestor, Progress, new_job_id
from quantivista.pipeline.writer import BarWriter, WriteOutcome

__all__ = ["BarWriter", "Ingestor", "Progress", "WriteOutcome", "new_job_id"]
