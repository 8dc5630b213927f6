"""Child processes of a test: always reaped, their pipes closed, even when the test fails.

A `Popen` left running with open pipes warns (ResourceWarning) when it is collected, which
pytest reports in whatever test runs then: one failure became two. `reaped(proc)` kills and
reaps `proc` when its block ends; `probe_url` reads a daemon's probe address from its stdout.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx
import pytest

P = TypeVar("P", bound="subprocess.Popen[Any]")


def reap(proc: subprocess.Popen[Any], timeout_s: float = 15.0) -> None:
    """Kill `proc` unless it has exited, wait for it and close its pipes."""
    if proc.poll() is None:
        proc.kill()
    try:
        proc.communicate(timeout=timeout_s)  # drains and closes the pipes, then waits
    except (subprocess.TimeoutExpired, ValueError, OSError):  # a pipe the test closed
        proc.wait(timeout=timeout_s)
    finally:
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def terminate(proc: subprocess.Popen[Any], timeout_s: float = 15.0) -> None:
    """Stop `proc` with SIGTERM, or SIGKILL when it has not exited within `timeout_s`."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        reap(proc)


@contextmanager
def reaped(proc: P) -> Iterator[P]:
    """Yield `proc`; when the block ends (however), kill it if it still runs and reap it."""
    try:
        yield proc
    finally:
        reap(proc)


def probe_url(proc: subprocess.Popen[str], timeout_s: float = 60.0) -> str:
    """Return the probe URL a `qv` daemon prints first on stdout ("...: probes on URL")."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "probes on" in line:
            return line.rsplit(" ", 1)[-1].strip()
        if not line and proc.poll() is not None:
            break
    if proc.poll() is None:
        proc.kill()
    _, err = proc.communicate(timeout=15)
    pytest.fail(f"the daemon did not start: {err}")


def metric(url: str, name: str) -> float:
    """Return the value of the sample `name` (labels included, as written) on `url`/metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0
