"""Background upkeep yields to foreground work (`ops.foreground`)."""

from __future__ import annotations

import threading
import time

from quantivista.ops.foreground import Foreground


def test_an_idle_process_does_not_wait() -> None:
    gate = Foreground()
    t0 = time.perf_counter()
    assert gate.wait_idle(5.0)
    assert time.perf_counter() - t0 < 0.5


def test_a_wait_ends_at_its_bound_while_foreground_work_runs() -> None:
    gate = Foreground()
    with gate.running():
        t0 = time.perf_counter()
        assert not gate.wait_idle(0.05)
        assert 0.04 <= time.perf_counter() - t0 < 1.0


def test_a_waiting_step_goes_on_when_the_last_foreground_block_ends() -> None:
    gate = Foreground()
    done = threading.Event()
    waited: list[bool] = []

    def step() -> None:
        waited.append(gate.wait_idle(10.0))
        done.set()

    with gate.running():
        with gate.running():  # nested blocks count: the outer one still runs
            worker = threading.Thread(target=step)
            worker.start()
        assert not done.wait(0.2)
    assert done.wait(5.0)  # released long before its 10 s bound
    worker.join()
    assert waited == [True]


def test_a_foreground_block_that_raises_still_ends() -> None:
    gate = Foreground()
    try:
        with gate.running():
            raise ValueError("boom")
    except ValueError:
        pass
    assert gate.wait_idle(0.0)
