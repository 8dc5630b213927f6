"""Partition lock stripes kept open: they exclude threads of one process, other processes
(also `flocked` callers), and a forked child from its parent."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from quantivista.storage.lake.files import flocked
from quantivista.storage.lake.locks import StripeLocks


def test_threads_of_one_process_take_turns(tmp_path: Path) -> None:
    locks = StripeLocks(tmp_path, 4)
    inside = [0]
    most = [0]

    def work() -> None:
        for _ in range(200):
            with locks.held([2, 1]):
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                time.sleep(0)
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1


def test_a_stripe_is_opened_once_and_excludes_a_flocked_caller(tmp_path: Path) -> None:
    locks = StripeLocks(tmp_path, 4)
    with locks.held([3]):
        pass
    fd = locks._fds[3]
    acquired: list[float] = []
    with locks.held([3]):
        assert locks._fds[3] == fd  # the same descriptor, not a new open
        waiter = threading.Thread(target=lambda: _take(tmp_path / "03.lock", acquired), daemon=True)
        waiter.start()
        time.sleep(0.2)
        assert not acquired  # a snapshot's `flocked` waits for the writer
        released = time.monotonic()
    waiter.join(5)
    assert acquired and acquired[0] >= released


def _take(path: Path, acquired: list[float]) -> None:
    with flocked(path):
        acquired.append(time.monotonic())


_HOLDER = """
import sys, time
from pathlib import Path
from quantivista.storage.lake.locks import StripeLocks
locks = StripeLocks(Path(sys.argv[1]), 4)
with locks.held([0, 1]):
    print("held", flush=True)
    time.sleep(0.5)
"""


def test_another_process_waits_for_the_stripes(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "held"
    t0 = time.monotonic()
    with StripeLocks(tmp_path, 4).held([1]):
        waited = time.monotonic() - t0
    child.wait(10)
    child.stdout.close()
    assert waited > 0.2


def test_a_forked_child_does_not_share_its_parents_locks(tmp_path: Path) -> None:
    locks = StripeLocks(tmp_path, 4)
    with locks.held([2]):  # the descriptor exists before the fork
        pass
    read, write = os.pipe()
    with locks.held([2]):
        pid = os.fork()
        if pid == 0:  # the child: must wait for the parent, not share its lock
            os.close(read)
            try:
                t0 = time.monotonic()
                with locks.held([2]):
                    waited = time.monotonic() - t0
                os.write(write, f"{waited:.3f}".encode())
            finally:
                os._exit(0)
        os.close(write)
        time.sleep(0.4)
    os.waitpid(pid, 0)
    waited = float(os.read(read, 64).decode())
    os.close(read)
    assert waited > 0.2
