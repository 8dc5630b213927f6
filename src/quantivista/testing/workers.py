"""Start and stop `qv worker` processes (tests and perf scripts of the scale-out)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = ["WorkerProcess", "WorkerProcesses"]

_STARTED = re.compile(r"worker (\S+) serving queue .* probes on (\S+)")


@dataclass
class WorkerProcess:
    """One running `qv worker`: its process, its holder name and its probes' URL."""

    proc: subprocess.Popen[str]
    name: str
    url: str

    @property
    def pid(self) -> int:
        """Return the process id."""
        return self.proc.pid


class WorkerProcesses:
    """`n` worker processes with the environment `env` (settings as QV_* variables)."""

    def __init__(
        self,
        n: int,
        env: dict[str, str],
        *,
        concurrency: int = 2,
        queue: str | None = None,
        log_dir: Path | None = None,
        startup_timeout_s: float = 30.0,
    ) -> None:
        self.n = n
        self.env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join(sys.path)}
        self.concurrency = concurrency
        self.queue = queue
        self.log_dir = log_dir
        self.startup_timeout_s = startup_timeout_s
        self.workers: list[WorkerProcess] = []

    def start(self) -> WorkerProcesses:
        """Start every worker and wait until each serves (its probes answer)."""
        procs = [self._spawn(i) for i in range(self.n)]
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # the first line names the worker and its probes
            match = _STARTED.search(line)
            if match is None:
                proc.kill()
                raise RuntimeError(f"a worker did not start: {line!r}")
            self.workers.append(WorkerProcess(proc, match.group(1), match.group(2)))
        return self

    def _spawn(self, number: int) -> subprocess.Popen[str]:
        args = [sys.executable, "-m", "quantivista.cli", "worker", "--probe-port", "0",
                "--concurrency", str(self.concurrency)]  # fmt: skip
        if self.queue:
            args += ["--queue", self.queue]
        if self.log_dir is None:
            return subprocess.Popen(
                args, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
        with open(self.log_dir / f"worker-{number}.log", "w") as log:  # the child keeps a copy
            return subprocess.Popen(
                args, env=self.env, stdout=subprocess.PIPE, stderr=log, text=True
            )

    def kill(self, worker: WorkerProcess) -> None:
        """Kill one worker at once (SIGKILL: no drain, no release)."""
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait(timeout=10)

    def stop(self, timeout_s: float = 20.0) -> list[int]:
        """SIGTERM every live worker, wait for each; return the exit codes."""
        for w in self.workers:
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        codes = []
        for w in self.workers:
            try:
                w.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
            if w.proc.stdout is not None:
                w.proc.stdout.close()
            codes.append(w.proc.returncode)
        return codes

    def __enter__(self) -> WorkerProcesses:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
