"""tests/procs.py: a test that fails with a child process running leaves nothing behind."""

from __future__ import annotations

import gc
import subprocess
import sys
import warnings

import pytest

from procs import reaped


def test_a_failing_block_kills_the_child_and_closes_its_pipes() -> None:
    sleeper = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"]
    with (
        pytest.raises(AssertionError),
        reaped(
            subprocess.Popen(sleeper, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ) as proc,
    ):
        assert proc.stdout is not None and proc.stdout.readline() == "up\n"
        raise AssertionError("the test fails here, its child still running")
    assert proc.returncode is not None  # killed and reaped
    assert proc.stdout is not None and proc.stdout.closed
    assert proc.stderr is not None and proc.stderr.closed
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        del proc
        gc.collect()  # nothing left to warn about when it is collected
