"""`qv backfill --plan`: the plan's time, with and without the host's measured costs."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from quantivista.cli import app

runner = CliRunner()
ENV = {"QV_INGEST__FETCH_CONCURRENCY": "1", "QV_WORKERS__POLL_S": "0.01", "COLUMNS": "200"}


def _predicted(root: Path, *options: str) -> float:
    result = runner.invoke(
        app,
        ["--data-dir", str(root), "backfill", "AAA", "BBB", "--start", "2024-01-02",
         "--end", "2024-03-28", "-p", "synthetic", "--plan", "--latency-ms", "50", *options],
        env=ENV,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "queued" not in result.output  # --plan queues nothing
    match = re.search(r"predicted ([0-9.]+) s", result.output)
    assert match, result.output
    return float(match.group(1))


def test_the_host_costs_are_played_out_on_the_cpus(tmp_path: Path) -> None:
    root = tmp_path / "qv"
    # one task of 2 calls of 50 ms, nothing else
    assert _predicted(root, "--cpus", "1") == 0.1
    # + a worker's 1 s of CPU per task and a job's 2 fixed seconds
    assert _predicted(root, "--worker-cpu-ms", "1000", "--job-s", "2", "--cpus", "1") == 3.1
    # twice as slow a host: the CPU second takes two, the waiting does not stretch
    slowed = ("--worker-cpu-ms", "1000", "--slowdown", "2", "--cpus", "1")
    assert _predicted(root, *slowed) == 2.1


def test_bad_host_costs_are_refused(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["--data-dir", str(tmp_path / "qv"), "backfill", "AAA", "--start", "2024-01-02",
         "--end", "2024-01-31", "--plan", "--worker-cpu-ms", "-5"],
    )  # fmt: skip
    assert result.exit_code == 2


def test_a_measured_time_per_task_is_fitted_and_the_models_terms_are_printed(
    tmp_path: Path,
) -> None:
    # 4 tasks of one call (one symbol each) on one worker of 2 slots: two rounds; a call
    # of 50 ms, then 0.1 s of the worker's CPU per task, the part on the path sharing the
    # GIL with the other slot's, the part beside it on the second CPU: a round takes
    # 0.05 + 0.2 max(p, 1 - p) s, a task half of it; measured 0.1 s a task: p = 0.75
    result = runner.invoke(
        app,
        ["--data-dir", str(tmp_path / "qv"), "backfill", "AAA", "BBB", "CCC", "DDD",
         "--start", "2024-01-02", "--end", "2024-03-28", "-p", "synthetic", "--plan",
         "--latency-ms", "50", "--worker-cpu-ms", "100", "--task-ms", "100", "--cpus", "2"],
        env={**ENV, "QV_INGEST__SYMBOLS_PER_BATCH": "1"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "predicted 0.4 s" in out  # 2 rounds of 0.2 s + the first poll (0.01 s)
    assert "one worker 0.100 s per task" in out
    assert "worker CPU on the path 75%, slowdown 1.00)" in out
    assert "1 worker(s) alone 0.4 s" in out


def test_a_measured_time_per_task_fits_its_own_slowdown(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["--data-dir", str(tmp_path / "qv"), "backfill", "AAA", "--start", "2024-01-02",
         "--end", "2024-01-31", "-p", "synthetic", "--plan", "--task-ms", "100",
         "--slowdown", "2"],
        env=ENV,
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--task-ms" in result.output
    alone = runner.invoke(
        app,
        ["--data-dir", str(tmp_path / "qv"), "backfill", "AAA", "--start", "2024-01-02",
         "--end", "2024-01-31", "-p", "synthetic", "--plan", "--task-ms", "100"],
        env=ENV,
    )  # fmt: skip
    assert alone.exit_code == 2
    assert "--worker-cpu-ms" in alone.output
