"""The backfill model: slots, quota and CPU contention played out event by event."""

from __future__ import annotations

from dataclasses import replace

import pytest

from quantivista.model.rates import Rate
from quantivista.services.backfill import predicted_seconds
from quantivista.services.host_model import HostCosts, Scenario, fit, simulate, terms


def test_without_costs_or_quota_slots_run_their_tasks_call_after_call() -> None:
    # 20 tasks of 10 calls on 2 slots: 10 rounds of 10 x 50 ms
    backfill = Scenario(20, 200, workers=1, concurrency=2, latency_s=0.05)
    assert simulate(backfill) == pytest.approx(5.0)
    # on 8 slots: 3 rounds (8, 8, 4)
    assert simulate(replace(backfill, workers=4)) == pytest.approx(1.5)


def test_a_tight_quota_gives_the_limiters_time() -> None:
    got = simulate(Scenario(10, 100, workers=2, concurrency=2, latency_s=0.05,
                            windows=((10, 1.0),)))  # fmt: skip
    want = predicted_seconds(100, [Rate.parse("10/1s")], latency_s=0.05, concurrency=4)
    assert got == pytest.approx(want, rel=0.02)


def test_one_worker_uses_one_cpu_at_most_whatever_the_host_has() -> None:
    # CPU-bound tasks (1 s each, no waiting): its two slots share the GIL
    costs = HostCosts(worker_s_per_task=1.0, cpus=4)
    played = Scenario(4, 4, workers=1, concurrency=2, latency_s=0.0, costs=costs)
    assert simulate(played) == pytest.approx(4.0)
    # two workers use two of the CPUs
    assert simulate(replace(played, workers=2)) == pytest.approx(2.0)


def test_a_provider_and_a_database_on_the_host_take_cpu_from_the_workers() -> None:
    alone = HostCosts(worker_s_per_task=0.1, cpus=2)
    shared = HostCosts(worker_s_per_task=0.1, provider_s_per_call=0.01, store_s_per_task=0.05,
                       cpus=2)  # fmt: skip
    backfill = Scenario(40, 400, workers=4, concurrency=2, latency_s=0.05)
    t_alone = simulate(replace(backfill, costs=alone))
    t_shared = simulate(replace(backfill, costs=shared))
    # 4 CPU seconds of workers + 4 of the simulator (one process: one CPU at most) + 2 of
    # the database on 2 CPUs: 5 s at least, and the simulator's share is less than a CPU
    assert t_shared >= 5.0
    assert t_shared > 1.8 * t_alone


def test_a_slower_host_stretches_the_cpu_not_the_waiting() -> None:
    costs = HostCosts(worker_s_per_task=0.1, cpus=2)
    slow = HostCosts(worker_s_per_task=0.1, cpus=2, slowdown=2.0)
    quick = simulate(Scenario(2, 20, workers=1, concurrency=2, latency_s=0.05, costs=costs))
    slowed = simulate(Scenario(2, 20, workers=1, concurrency=2, latency_s=0.05, costs=slow))
    # 10 calls of 50 ms + 0.1 s (two slots on one GIL: 0.2 s) -> + 0.2 s when twice as slow
    assert slowed - quick == pytest.approx(0.2, abs=0.02)


def test_a_known_schedule_takes_the_seconds_counted_by_hand() -> None:
    # one slot, 2 tasks of 2 calls; a call: 0.1 s latency, then 0.02 s of the provider's
    # CPU, then 0.03 s of the worker's; a task ends with 0.05 s of the database's:
    # 2 x (2 x 0.15 + 0.05) = 0.7 s; nothing runs at once, so 1 CPU is plenty
    costs = HostCosts(worker_s_per_task=0.06, provider_s_per_call=0.02,
                      store_s_per_task=0.05, cpus=1)  # fmt: skip
    backfill = Scenario(2, 4, workers=1, concurrency=1, latency_s=0.1)
    assert simulate(replace(backfill, costs=costs)) == pytest.approx(0.7)
    # twice as slow a host: each CPU part doubles, 2 x (2 x 0.2 + 0.1) = 1.0 s
    slow = HostCosts(worker_s_per_task=0.06, provider_s_per_call=0.02,
                     store_s_per_task=0.05, cpus=1, slowdown=2.0)  # fmt: skip
    assert simulate(replace(backfill, costs=slow)) == pytest.approx(1.0)


def test_calls_in_flight_overlap_the_parsing_of_earlier_answers() -> None:
    # one slot, one task of 4 calls of 0.1 s, 0.05 s of parsing each (on one GIL)
    costs = HostCosts(worker_s_per_task=0.2, cpus=2)
    task = Scenario(1, 4, workers=1, concurrency=1, latency_s=0.1, costs=costs)
    # one at a time: 4 x (0.1 + 0.05)
    assert simulate(task) == pytest.approx(0.6)
    # two at a time: both answers at 0.1, parsed sharing the GIL until 0.2; the next two
    # the same from 0.2 to 0.4
    assert simulate(replace(task, fetch_concurrency=2)) == pytest.approx(0.4)
    # parsing that outlasts the latency: a third call's answer waits for the GIL
    heavy = HostCosts(worker_s_per_task=1.2, cpus=2)  # 0.3 s per call
    got = simulate(replace(task, costs=heavy, fetch_concurrency=4))
    assert got == pytest.approx(0.1 + 4 * 0.3)  # all answers at 0.1, then 1.2 s of CPU


def test_fetch_concurrency_obeys_the_quota_too() -> None:
    got = simulate(Scenario(5, 100, workers=1, concurrency=1, latency_s=0.05,
                            windows=((10, 1.0),), fetch_concurrency=4))  # fmt: skip
    want = predicted_seconds(100, [Rate.parse("10/1s")], latency_s=0.05, concurrency=4)
    assert got == pytest.approx(want, rel=0.02)


def test_the_polars_pool_part_runs_outside_the_gil() -> None:
    # one worker, two slots, each task 1 s of CPU and no waiting, on 2 CPUs
    two = Scenario(2, 2, workers=1, concurrency=2, latency_s=0.0)
    on_gil = HostCosts(worker_s_per_task=1.0, cpus=2)
    on_pool = HostCosts(worker_s_per_task=1.0, worker_pool_s_per_task=1.0, pool_threads=2,
                        cpus=2)  # fmt: skip
    assert simulate(replace(two, costs=on_gil)) == pytest.approx(2.0)
    assert simulate(replace(two, costs=on_pool)) == pytest.approx(1.0)
    # a pool of one thread is one CPU again; one slot's part uses one CPU, not the pool's two
    one = HostCosts(worker_s_per_task=1.0, worker_pool_s_per_task=1.0, pool_threads=1, cpus=2)
    assert simulate(replace(two, costs=one)) == pytest.approx(2.0)
    assert simulate(replace(two, tasks=1, calls=1, costs=on_pool)) == pytest.approx(1.0)
    # half on the GIL, half on the pool: both GIL halves share one CPU until 1.0 s, then
    # both pool halves run at once on the two CPUs until 1.5 s
    half = HostCosts(worker_s_per_task=1.0, worker_pool_s_per_task=0.5, pool_threads=2, cpus=2)
    assert simulate(replace(two, costs=half)) == pytest.approx(1.5)


def test_the_cpu_beside_a_tasks_path_overlaps_its_calls_but_not_the_cores() -> None:
    # one slot, one task of 3 calls of 0.1 s; 0.1 s of the worker's CPU per call
    task = Scenario(1, 3, workers=1, concurrency=1, latency_s=0.1)
    two = HostCosts(worker_s_per_task=0.3, cpus=2)
    # all of it on the path: 3 x (0.1 + 0.1)
    assert simulate(replace(task, costs=two)) == pytest.approx(0.6)
    # half: 0.05 on the path while 0.05 runs beside it on the other CPU: 3 x 0.15
    half = replace(two, on_path=0.5)
    assert simulate(replace(task, costs=half)) == pytest.approx(0.45)
    # none: the calls back to back, the task ends when the last answer's 0.1 s is done
    none = replace(two, on_path=0.0)
    assert simulate(replace(task, costs=none)) == pytest.approx(0.4)
    # on one CPU the part beside the path takes its turn: 0.1 s of CPU per call still
    # takes 0.1 s after each answer, 0.6 s as if all were on the path
    one = HostCosts(worker_s_per_task=0.3, cpus=1, on_path=0.5)
    assert simulate(replace(task, costs=one)) == pytest.approx(0.6)


def test_fit_plays_one_worker_out_in_its_measured_time_per_task() -> None:
    # one slot, tasks of 2 calls of 0.1 s, 0.2 s of the worker's CPU per task on 2 CPUs:
    # with a share p >= 0.5 on the path a task takes 0.2 + 0.1 p + 0.1 p = 0.2 + 0.2 p
    costs = HostCosts(worker_s_per_task=0.2, cpus=2)
    kw = {"calls_per_task": 2, "concurrency": 1, "latency_s": 0.1}
    fitted = fit(replace(costs, task_s=0.36), **kw)  # type: ignore[arg-type]
    assert fitted.on_path == pytest.approx(0.8)
    assert fitted.slowdown == 1.0
    # then 10 tasks take 10 x 0.36 s, as measured
    ten = Scenario(10, 20, workers=1, concurrency=1, latency_s=0.1, costs=fitted)
    assert simulate(ten) == pytest.approx(3.6)
    # slower than all of it on the path (0.4 s): the host is slower, 0.2 + 0.2 s = 0.5
    slowed = fit(replace(costs, task_s=0.5), **kw)  # type: ignore[arg-type]
    assert (slowed.on_path, slowed.slowdown) == (1.0, pytest.approx(1.5))
    # quicker than the calls alone allow (0.3 s at p <= 0.5): nothing on the path
    assert fit(replace(costs, task_s=0.25), **kw).on_path == pytest.approx(0.0)  # type: ignore[arg-type]
    # no measured time, or no CPU to fit it with: the costs as given
    assert fit(costs, **kw) is costs  # type: ignore[arg-type]
    idle = HostCosts(cpus=2, task_s=0.5)
    assert fit(idle, **kw) is idle  # type: ignore[arg-type]


def test_terms_list_the_bounds_beside_the_played_out_time() -> None:
    # 20 tasks of 10 calls, 4 workers of 2 slots; one worker measured at 0.4 s a task
    costs = HostCosts(worker_s_per_task=0.1, provider_s_per_call=0.004, store_s_per_task=0.02,
                      cpus=2, task_s=0.4)  # fmt: skip
    backfill = Scenario(20, 200, workers=4, concurrency=2, latency_s=0.05, costs=costs)
    got = terms(backfill)
    # 3 rounds of 8 tasks, each round a slot's task: 2 x 0.4 s
    assert got["task_s"] == 0.4
    assert got["workers_s"] == pytest.approx(2.4)
    # the calls alone: 3 rounds of 10 calls of 50 ms
    assert got["calls_s"] == pytest.approx(1.5)
    # 20 x 0.12 s + 200 x 4 ms = 3.2 CPU seconds on 2 CPUs; the provider's 0.8 s
    assert got["cpu_s"] == pytest.approx(1.6)
    assert got["provider_s"] == pytest.approx(0.8)
    assert got["played_s"] == pytest.approx(simulate(backfill))
    assert (got["on_path"], got["slowdown"]) == (1.0, 1.0)
    # without a measured time, one worker's is played out: 2 slots, 10 x 50 ms calls and
    # 0.1 s of CPU each (two slots on one GIL), no provider or store
    bare = HostCosts(worker_s_per_task=0.1, cpus=2)
    played = terms(replace(backfill, workers=1, costs=bare))
    assert played["task_s"] == pytest.approx(played["played_s"] / 20)
