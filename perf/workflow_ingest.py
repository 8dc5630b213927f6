"""Reporting-side ingestion: 10 M execution records from Parquet and from CSV through the
transformation rules and quality checks into `execution_data_lake`, and dlt on the same load.

Prints one JSON line: records per second of each of our runs (whole jobs: read, rules,
checks, dead letters, lake write, catalog), of a plain job (no rules or checks: dlt's work
plus lineage columns and partitions), of a bare copy (Polars reads the file and writes it
as one zstd-1 Parquet file: no rules, checks, partitions, lineage or catalog; the floor of
any load into Parquet here) and of dlt (filesystem destination, Parquet), loading the same
records from the same files in the same process; the ratios (of wall time, and of CPU
seconds of every thread, which other work on the machine moves less); the load average
around each run.

What dlt does with this load (dlt 1.30, read from its source, and its stage times printed
as `*_dlt_stages_s`): extract writes the Arrow batches it is given (pyarrow's Parquet
reader in 500,000-row batches; for CSV, `pyarrow.csv.read_csv` with type inference) into
Parquet files of its load package with pyarrow's writer (snappy); normalize imports those
files unchanged (Arrow tables get no `_dlt_load_id` / `_dlt_id` column by default, so
nothing is rewritten); load copies them into the destination folder. It transforms,
checks, partitions and dead-letters nothing: it is a Parquet-to-Parquet copy, and the
same records (all 10 M, faulty ones too) land in the same format.
Targets:
>= 1 M records/s, >= 3x dlt. Usage: `python perf/workflow_ingest.py [--rows N] [--runs R]`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from quantivista.clock import TestClock
from quantivista.config import Settings
from quantivista.model.workflow import DataSource, QualityCheck, TransformationRule
from quantivista.runtime import Runtime

RULES = [
    TransformationRule(rule_id="price", rule_type="cast", source_field="execution_price",
                       transformation_logic="float64"),
    TransformationRule(rule_id="qty", rule_type="cast", source_field="execution_qty",
                       transformation_logic="int64"),
    TransformationRule(rule_id="utc", rule_type="timezone", source_field="execution_time",
                       transformation_logic="America/New_York"),
    TransformationRule(rule_id="notional", rule_type="derive", target_field="execution_notional",
                       transformation_logic="execution_price * execution_qty"),
    TransformationRule(rule_id="cents", rule_type="scale", source_field="execution_notional",
                       target_field="notional_cents", transformation_logic="100"),
]  # fmt: skip
CHECKS = [
    QualityCheck(check_id="id", check_type="not_null", field="trade_id"),
    QualityCheck(check_id="once", check_type="unique", field="trade_id"),
    QualityCheck(check_id="side", check_type="allowed_values", field="order_side",
                 params={"values": ["BUY", "SELL"]}),
    QualityCheck(check_id="qty", check_type="range", field="execution_qty", params={"min": 1}),
]  # fmt: skip


def executions(n: int) -> pl.DataFrame:
    """Return `n` trade records, about 1% with an injected fault (vectorized)."""
    i = pl.int_range(n, dtype=pl.Int64, eager=True)
    h = (i * 2654435761) % 1_000_003  # a cheap deterministic scramble
    base = int(datetime(2026, 11, 2, 9, 30, tzinfo=UTC).timestamp())
    frame = pl.DataFrame({"i": i, "h": h}).select(
        trade_id=pl.when(pl.col("h") % 300 == 0)
        .then(None)
        .otherwise(pl.format("T{}", pl.col("i"))),
        order_id=pl.format("O{}", pl.col("i")),
        order_side=pl.when(pl.col("h") % 2 == 0).then(pl.lit("BUY")).otherwise(pl.lit("SELL")),
        order_qty=pl.col("h") % 5000 + 1,
        symbol=pl.col("h") % 500,
        execution_time=pl.from_epoch(base + pl.col("h") * 37 % (20 * 86_400), time_unit="s"),
        execution_price=pl.when(pl.col("h") % 251 == 0)
        .then(pl.lit("n/a"))
        .otherwise((10 + (pl.col("h") % 90_000) / 100).cast(pl.String)),
        execution_qty=pl.col("h") % 5000 + 1,
        venue=pl.when(pl.col("h") % 3 == 0).then(pl.lit("XNYS")).otherwise(pl.lit("XNAS")),
        settlement_status=pl.lit("SETTLED"),
    )
    return frame.with_columns(pl.format("S{}", pl.col("symbol")).alias("symbol"))


def cpu_s() -> float:
    """CPU seconds of this process and its children so far (every thread)."""
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def ours(root: Path, path: Path, fmt: str, plain: bool = False) -> tuple[float, float, int, int]:
    """Run one job; `plain`: no rules or checks, into a typed table (dlt's work plus lineage)."""
    settings = Settings(data_dir=root)
    with Runtime(settings, clock=TestClock(datetime(2026, 12, 4, tzinfo=UTC))) as rt:
        for rule in RULES:
            rt.workflows.save_rule("perf", rule)
        rt.workflows.register_source("perf", DataSource(
            source_id="execs", source_type="TRADE_EXECUTION", ingestion_mode="ON_DEMAND",
            data_format=fmt, location=str(path),
            target_table="risk_metrics" if plain else "execution_data_lake",
            transformation_rules=[] if plain else [r.rule_id for r in RULES],
            quality_checks=[] if plain else CHECKS))  # fmt: skip
        started, cpu = time.perf_counter(), cpu_s()
        job = rt.workflows.sync("perf", "execs")
        elapsed, cpu = time.perf_counter() - started, cpu_s() - cpu
        assert job.status.value == ("succeeded" if plain else "partial"), job
    return elapsed, cpu, job.records_processed, job.records_failed


def with_dlt(root: Path, path: Path, fmt: str) -> tuple[float, float, list[float]]:
    import dlt
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    os.environ["RUNTIME__LOG_LEVEL"] = "WARNING"
    os.environ["DLT_DATA_DIR"] = str(root / "dlt-home")

    @dlt.resource(name="executions", write_disposition="append")
    def rows() -> Any:
        if fmt == "PARQUET":
            yield from pq.ParquetFile(path).iter_batches(batch_size=500_000)
        else:
            yield pacsv.read_csv(path)

    pipeline = dlt.pipeline(
        pipeline_name=f"perf_{fmt.lower()}",
        destination=dlt.destinations.filesystem(str(root / "dlt-lake")),
        dataset_name="reporting",
        pipelines_dir=str(root / "dlt-pipelines"),
    )
    started, cpu = time.perf_counter(), cpu_s()
    # `run` is these three steps; timed one by one to show where dlt's time goes
    pipeline.extract(rows(), loader_file_format="parquet")
    extracted = time.perf_counter()
    pipeline.normalize()
    normalized = time.perf_counter()
    pipeline.load()
    ended = time.perf_counter()
    stages = [extracted - started, normalized - extracted, ended - normalized]
    return ended - started, cpu_s() - cpu, stages


def bare_copy(root: Path, path: Path, fmt: str) -> tuple[float, float]:
    """Read the file and write it as one Parquet file (zstd-1): no work but the copy."""
    root.mkdir(parents=True)
    started, cpu = time.perf_counter(), cpu_s()
    frame = pl.read_parquet(path) if fmt == "PARQUET" else pl.read_csv(path, infer_schema=False)
    frame.write_parquet(root / "copy.parquet", compression="zstd", compression_level=1)
    return time.perf_counter() - started, cpu_s() - cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    out: dict[str, Any] = {"rows": args.rows, "runs": args.runs, "load1": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        frame = executions(args.rows)
        files = {"PARQUET": root / "executions.parquet", "CSV": root / "executions.csv"}
        frame.write_parquet(files["PARQUET"])
        frame.write_csv(files["CSV"])
        # first uses (dlt imports its destination, normalizer and writers lazily: 2 s in
        # its first run) are paid on 1,000 records of each file, by both sides, untimed
        small = {"PARQUET": root / "small.parquet", "CSV": root / "small.csv"}
        frame.head(1_000).write_parquet(small["PARQUET"])
        frame.head(1_000).write_csv(small["CSV"])
        del frame
        for fmt, path in small.items():
            ours(root / f"warm-qv-{fmt}", path, fmt)
            with_dlt(root / f"warm-dlt-{fmt}", path, fmt)
        for fmt, path in files.items():
            key = fmt.lower()
            rates, dlt_rates, plain_rates, cpu_ratios, bare_rates = [], [], [], [], []
            for run in range(args.runs):
                out.setdefault(f"{key}_load1", []).append(round(os.getloadavg()[0], 1))
                secs, cpu, processed, failed = ours(root / f"qv-{fmt}-{run}", path, fmt)
                rates.append(args.rows / secs)
                plain, plain_cpu, _, _ = ours(root / f"plain-{fmt}-{run}", path, fmt, plain=True)
                plain_rates.append(args.rows / plain)
                out.setdefault(f"{key}_plain_cpu_s", []).append(round(plain_cpu, 2))
                bare, bare_cpu = bare_copy(root / f"bare-{fmt}-{run}", path, fmt)
                bare_rates.append(args.rows / bare)
                out[f"{key}_failed"] = failed
                out[f"{key}_processed"] = processed
                dlt_secs, dlt_cpu, stages = with_dlt(root / f"dlt-{fmt}-{run}", path, fmt)
                dlt_rates.append(args.rows / dlt_secs)
                cpu_ratios.append(dlt_cpu / cpu)
                out.setdefault(f"{key}_cpu_s", []).append(round(cpu, 2))
                out.setdefault(f"{key}_bare_cpu_s", []).append(round(bare_cpu, 2))
                out.setdefault(f"{key}_dlt_cpu_s", []).append(round(dlt_cpu, 2))
                # extract, normalize, load (wall seconds)
                out.setdefault(f"{key}_dlt_stages_s", []).append([round(x, 2) for x in stages])
                out.setdefault(f"{key}_load1_after", []).append(round(os.getloadavg()[0], 1))
            out[f"{key}_records_per_s"] = [round(min(rates)), round(max(rates))]
            out[f"{key}_plain_records_per_s"] = [round(min(plain_rates)), round(max(plain_rates))]
            out[f"{key}_bare_records_per_s"] = [round(min(bare_rates)), round(max(bare_rates))]
            out[f"{key}_dlt_records_per_s"] = [round(min(dlt_rates)), round(max(dlt_rates))]
            ratios = [r / d for r, d in zip(rates, dlt_rates, strict=True)]
            out[f"{key}_vs_dlt"] = [round(min(ratios), 2), round(max(ratios), 2)]
            # dlt's CPU seconds over ours on the same records: less sensitive to the load
            out[f"{key}_vs_dlt_cpu"] = [round(min(cpu_ratios), 2), round(max(cpu_ratios), 2)]
            # the bare copy against dlt: what any job here could reach at most
            floor = [b / d for b, d in zip(bare_rates, dlt_rates, strict=True)]
            out[f"{key}_bare_vs_dlt"] = [round(min(floor), 2), round(max(floor), 2)]
    out["load1_after"] = os.getloadavg()[0]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
