"""How long a backfill takes when workers, the provider and the database share the CPUs.

The planner's closed bounds (quota, slots, CPU: `backfill.task_seconds`) are each right alone
but optimistic where two meet, and they leave out CPU that is not the workers': a provider
on the same host (the simulator) and the database answer every call and every task too.
`simulate` plays a backfill (a `Scenario`) out event by event instead:

- `workers` processes of `concurrency` slots; a slot runs its tasks one after another, each
  task its calls one after another: wait for the quota (the limiter's sliding logs, a call
  holding its place from its grant until its answer), the call's latency (pure waiting),
  the provider's CPU for the answer, the worker's CPU for the call's share of the task;
  then the database's CPU for the task (claim, store, finish);
- the CPUs are shared by the runnable processes (processor sharing): each of the `cpus`
  goes to one process at a time, and a process's threads share one CPU at most (the GIL:
  a worker's slots, the provider's handlers), except the part of a worker's CPU spent on
  polars' thread pool (outside the GIL: the slot waits for it; the slots' parts run at
  once, up to `pool_threads` CPUs); each database burst is its own backend; other work on
  the machine slows every burst by `slowdown` (fitted, 1 when the costs explain it);
- a task keeps up to `fetch_concurrency` calls in flight (`ingest.fetch_concurrency`):
  one answer is parsed while the next call waits for its own.

The costs are measured (perf/workers.py calibrates them on two job sizes of one worker:
CPU seconds per task of the workers, with their polars pool's part, of the provider per
call, of PostgreSQL per task; a job's fixed seconds apart); with none given the model is
the slots' and the quota's bound.

Composed from its parts alone, a task's time at one worker comes out longer than measured
(session 7: 0.51 s per task against 0.43 s): not all the CPU a worker's process spends per
task lies on the task's path (its other slot's work, heartbeats, the statistics saver, the
garbage collector run while the task's calls wait). So the one-worker time is taken as
measured (`HostCosts.task_s`: two jobs' wall difference over their tasks' difference, all
the pipelining included) and `fit` finds the share of the worker's CPU on the tasks' path
(`on_path`; the rest runs beside them, on the cores but not in the slot's way) that plays
one worker out in exactly that time; only if all of it on the path is still quicker than
measured, other work on the host is the `slowdown`. With N workers the model then adds only
what changes: N workers, the provider and the database contending for the cores, and the
quota. `terms` lists the bounds beside the played-out time, for the plan's printout.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import KW_ONLY, dataclass, field, replace

__all__ = ["HostCosts", "Scenario", "fit", "simulate", "terms"]

_EPS = 1e-12


@dataclass(frozen=True)
class HostCosts:
    """CPU seconds a backfill costs besides waiting, and the CPUs it gets."""

    worker_s_per_task: float = 0.0  # a worker's own CPU per task (fetch, parse, validate)
    # the part of it on polars' thread pool (outside the GIL: the slot waits for it, but it
    # may use `pool_threads` CPUs at once); the rest holds the GIL, one CPU per process
    worker_pool_s_per_task: float = 0.0
    pool_threads: float = 1.0
    provider_s_per_call: float = 0.0  # a provider on the same host: its CPU per answer
    store_s_per_task: float = 0.0  # the database's CPU per task (and Redis's, if the run's alone)
    cpus: float = 1.0  # the CPUs the workers, the provider and the database share
    # wall seconds a CPU second takes a lone process that waits between short bursts, as
    # tasks do (1 on a quiet host; more when other work shares the machine)
    slowdown: float = 1.0
    # a job's own seconds besides its tasks' (the first claim, the first task's set-up, the
    # roll-up after the last task); not part of `simulate`, the plan adds it once per job
    job_s: float = 0.0
    # the wall seconds per task of one worker, measured (0: unknown, composed from the
    # costs); `fit` turns it into `on_path` (and `slowdown` if all on the path is too quick)
    task_s: float = 0.0
    # the share of the worker's CPU the task waits for; the rest runs beside the task's
    # calls (another thread's turn on the cores: contends for them, not in the slot's way)
    on_path: float = 1.0


@dataclass(frozen=True)
class Scenario:
    """A backfill on a host: what `simulate` plays out and `terms` bounds."""

    tasks: int
    calls: int  # spread over the tasks evenly
    _: KW_ONLY
    workers: int
    concurrency: int  # a worker's slots
    latency_s: float  # a call's wait for its answer
    costs: HostCosts = field(default_factory=HostCosts)  # none: the slots' and quota's bound
    windows: tuple[tuple[int, float], ...] = ()  # the quota's (limit, period + margin)
    fetch_concurrency: int = 1  # a task's calls in flight


@dataclass
class _Burst:
    owner: object  # the process it runs in: ("worker", i), "provider", or a unique backend
    left: float
    slot: int
    call: int = -1  # the call it answers or parses (-1: a task's store)
    then: float = 0.0  # CPU seconds on the worker's polars pool once this (GIL) part ends
    beside: bool = False  # off the task's path: the slot goes on, the task's end waits


def _on_pool(owner: object) -> bool:
    return isinstance(owner, tuple) and owner[0] == "pool"


def _shares(caps: list[float], cpus: float) -> list[float]:
    """Return the CPUs each runnable owner gets: an equal share, none more than its cap
    (what it cannot use goes to the others: water-filling)."""
    out = [0.0] * len(caps)
    left, free = cpus, sorted(range(len(caps)), key=lambda i: caps[i])
    while free:
        fair = left / len(free)
        i = free[0]
        if caps[i] > fair:
            for j in free:
                out[j] = fair
            break
        out[i] = caps[i]
        left -= caps[i]
        free.pop(0)
    return out


def simulate(scenario: Scenario) -> float:
    """Return the seconds from the first claim until the last task ends.

    A task keeps up to `fetch_concurrency` of its calls in flight: while one call waits for
    its answer another one's answer is parsed (the worker's CPU overlaps the latency).
    """
    tasks, calls, costs, windows = scenario.tasks, scenario.calls, scenario.costs, scenario.windows
    workers, concurrency = scenario.workers, scenario.concurrency
    latency_s, fetch_concurrency = scenario.latency_s, scenario.fetch_concurrency
    if tasks <= 0:
        return 0.0
    per_task = [calls // tasks + (1 if i < calls % tasks else 0) for i in range(tasks)]
    queue = list(reversed(per_task))  # pop() takes the next task
    slots = max(workers, 1) * max(concurrency, 1)
    fetch = max(fetch_concurrency, 1)
    worker_of = [s // max(concurrency, 1) for s in range(slots)]
    pool_s = min(costs.worker_pool_s_per_task, costs.worker_s_per_task)
    path = min(max(costs.on_path, 0.0), 1.0)
    gil_per_call = [path * (costs.worker_s_per_task - pool_s) / max(n, 1) for n in per_task]
    pool_per_call = [path * pool_s / max(n, 1) for n in per_task]
    beside_per_call = [(1 - path) * costs.worker_s_per_task / max(n, 1) for n in per_task]
    behind = [0] * slots  # per slot: its task's bursts beside the path not yet done
    # per slot: its task, calls not yet asked for, calls asked for and not yet parsed
    task_of = [-1] * slots
    to_ask = [0] * slots
    open_calls = [0] * slots
    timers: list[tuple[float, int, int, int]] = []  # (at, seq, slot, call): latencies ending
    seq = itertools.count()
    bursts: list[_Burst] = []
    grants: dict[int, list[float]] = {}  # live calls: [granted, answered (inf in flight)]
    calls_made = itertools.count()
    longest = max((period for _, period in windows), default=0.0)
    waiting: list[int] = []  # one entry per call waiting for the quota (its slot), in order
    backends = itertools.count()
    now = 0.0
    done = 0

    def start_next(slot: int) -> None:
        if not queue:
            return
        n = queue.pop()
        task_of[slot] = tasks - len(queue) - 1
        to_ask[slot], open_calls[slot] = n, 0
        ask(slot)

    def ask(slot: int) -> None:
        """Queue the task's next calls for the quota, up to `fetch` in flight; else store."""
        while to_ask[slot] > 0 and open_calls[slot] < fetch:
            to_ask[slot] -= 1
            open_calls[slot] += 1
            waiting.append(slot)
        if to_ask[slot] == 0 and open_calls[slot] == 0 and behind[slot] == 0:
            if costs.store_s_per_task > 0:
                bursts.append(_Burst(("store", next(backends)), costs.store_s_per_task, slot))
            else:
                finish(slot)

    def finish(slot: int) -> None:
        nonlocal done
        done += 1
        start_next(slot)

    def answered(slot: int, call: int) -> None:
        grants[call][1] = now  # the answer is back: the call settles in the windows
        gil, pool = gil_per_call[task_of[slot]], pool_per_call[task_of[slot]]
        aside = beside_per_call[task_of[slot]]
        if aside > 0:  # its own thread's turn: not the slot's GIL, one CPU at most
            behind[slot] += 1
            bursts.append(_Burst(("beside", worker_of[slot]), aside, slot, call, beside=True))
        if gil > 0:
            bursts.append(_Burst(("worker", worker_of[slot]), gil, slot, call, then=pool))
        elif pool > 0:
            bursts.append(_Burst(("pool", worker_of[slot]), pool, slot, call))
        else:
            parsed(slot)

    def parsed(slot: int) -> None:
        open_calls[slot] -= 1
        ask(slot)

    def quota_free_at(t: float) -> float:
        """Return when the next call may be granted (t if now; inf: wait for an answer)."""
        at = t
        for limit, period in windows:
            live = sorted(a + period for _, a in grants.values() if a + period > t)
            if len(live) >= limit:
                at = max(at, live[len(live) - limit])
        return at

    def grant_waiting() -> None:
        for key in [k for k, (_, a) in grants.items() if a + longest <= now]:
            del grants[key]  # out of every window: forget it
        while waiting and (not windows or quota_free_at(now) <= now + _EPS):
            slot = waiting.pop(0)
            call = next(calls_made)
            grants[call] = [now, float("inf")]
            heapq.heappush(timers, (now + latency_s, next(seq), slot, call))

    pool_cap = max(costs.pool_threads, 1.0)
    for slot in range(slots):
        start_next(slot)
    grant_waiting()
    while done < tasks:
        # the rates now: the runnable owners share the CPUs (one at most each, a worker's
        # pool up to its threads), an owner's bursts share its part
        owners: dict[object, list[_Burst]] = {}
        for b in bursts:
            owners.setdefault(b.owner, []).append(b)
        groups = list(owners.values())
        # (a small frame's operation runs on one pool thread: one CPU a burst at most)
        caps = [min(pool_cap, len(g)) if _on_pool(g[0].owner) else 1.0 for g in groups]
        shares = _shares(caps, costs.cpus)
        rates = {id(b): share / costs.slowdown / len(group)
                 for share, group in zip(shares, groups, strict=True) for b in group}  # fmt: skip
        nxt = float("inf")
        for b in bursts:
            nxt = min(nxt, now + b.left / rates[id(b)])
        if timers:
            nxt = min(nxt, timers[0][0])
        if waiting and windows:
            free = quota_free_at(now)
            if free > now:
                nxt = min(nxt, free)
        if nxt == float("inf"):
            raise RuntimeError("backfill model stalled")  # pragma: no cover - a bug
        dt = nxt - now
        for b in bursts:
            b.left -= rates[id(b)] * dt
        now = nxt
        # what ended: bursts, then latencies
        ended = [b for b in bursts if b.left <= _EPS * 10]
        bursts[:] = [b for b in bursts if b.left > _EPS * 10]
        for b in ended:
            if b.owner == "provider":
                answered(b.slot, b.call)
            elif b.then > 0:  # the GIL part is done; the pool's part follows
                bursts.append(_Burst(("pool", worker_of[b.slot]), b.then, b.slot, b.call))
            elif b.beside:  # the task may end once its work beside the path is done
                behind[b.slot] -= 1
                ask(b.slot)
            elif b.call >= 0:
                parsed(b.slot)
            else:
                finish(b.slot)
        while timers and timers[0][0] <= now + _EPS:
            _, _, slot, call = heapq.heappop(timers)
            if costs.provider_s_per_call > 0:
                bursts.append(_Burst("provider", costs.provider_s_per_call, slot, call))
            else:
                answered(slot, call)
        grant_waiting()
    return now


def _one_worker_task_s(scenario: Scenario, calls_per_task: int) -> float:
    """Return one worker's played-out seconds per task of `calls_per_task` calls without a
    quota: the growth from a job of one task per slot to one of four per slot, over its
    tasks (as the calibration measures it)."""
    small, large = max(scenario.concurrency, 1), 4 * max(scenario.concurrency, 1)

    def job(tasks: int) -> float:
        one = replace(scenario, tasks=tasks, calls=tasks * calls_per_task, workers=1, windows=())
        return simulate(one)

    return (job(large) - job(small)) / (large - small)


def fit(
    costs: HostCosts,
    *,
    calls_per_task: float,
    concurrency: int,
    latency_s: float,
    fetch_concurrency: int = 1,
) -> HostCosts:
    """Return `costs` played out so that one worker takes the measured `task_s` per task.

    The share of the worker's CPU on the tasks' path (`on_path`, 0-1) is raised from 0
    until one worker's played-out time per task is `task_s`; if all of it on the path is
    still quicker, the host is slower than its costs say (`slowdown` > 1, fitted the same
    way). Without `task_s`, or without any CPU cost to fit (nothing to put on the path or
    to slow down), the costs are returned as given. Measure `task_s` on tasks of
    `calls_per_task` calls where the quota does not bind (one worker).
    """
    cpu = costs.worker_s_per_task + costs.provider_s_per_call + costs.store_s_per_task
    if costs.task_s <= 0 or cpu <= 0:
        return costs
    calls = max(round(calls_per_task), 1)
    one = Scenario(0, 0, workers=1, concurrency=concurrency, latency_s=latency_s,
                   fetch_concurrency=fetch_concurrency)  # fmt: skip

    def played(on_path: float, slowdown: float) -> float:
        trial = replace(costs, on_path=on_path, slowdown=slowdown)
        return _one_worker_task_s(replace(one, costs=trial), calls)

    want = costs.task_s
    if played(1.0, 1.0) >= want:  # the share on the path decides
        lo, hi = 0.0, 1.0
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if played(mid, 1.0) < want else (lo, mid)
        return replace(costs, on_path=lo, slowdown=1.0)
    lo, hi = 1.0, 50.0  # all on the path is too quick: other work slows the host
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if played(1.0, mid) < want else (lo, mid)
    return replace(costs, on_path=1.0, slowdown=lo)


def terms(scenario: Scenario) -> dict[str, float]:
    """Return the model's terms for a backfill (seconds unless named otherwise).

    `task_s`: one worker's time per task (measured, else played out from the costs);
    `workers_s`: the workers alone (no contention, no quota): rounds of `workers x
    concurrency` tasks, each round `concurrency x task_s` (one worker's slots at once);
    `calls_s`: the calls alone (latency and quota, no CPU); `cpu_s`: every CPU second of the
    workers, the provider and the database over the cores (times `slowdown`);
    `provider_s`: the provider's (one process); `played_s`: all of it played out together
    (`simulate`; the plan adds `job_s` and the first poll); `on_path`, `slowdown`: as used.
    Give the costs as `fit` returns them.
    """
    tasks, calls, costs = scenario.tasks, scenario.calls, scenario.costs
    if tasks <= 0:
        return {"task_s": 0.0, "workers_s": 0.0, "calls_s": 0.0, "cpu_s": 0.0,
                "provider_s": 0.0, "played_s": 0.0, "on_path": costs.on_path,
                "slowdown": costs.slowdown}  # fmt: skip
    one = costs.task_s or _one_worker_task_s(scenario, max(round(calls / tasks), 1))
    cpu = tasks * (costs.worker_s_per_task + costs.store_s_per_task) + calls * (
        costs.provider_s_per_call
    )
    slots = max(scenario.workers, 1) * max(scenario.concurrency, 1)
    return {
        "task_s": one,
        # rounds of every slot's task; a slot's task takes `concurrency` x task_s
        "workers_s": math.ceil(tasks / slots) * max(scenario.concurrency, 1) * one,
        "calls_s": simulate(replace(scenario, costs=HostCosts(cpus=costs.cpus))),
        "cpu_s": cpu * costs.slowdown / max(costs.cpus, 1e-9),
        "provider_s": calls * costs.provider_s_per_call * costs.slowdown,
        "played_s": simulate(scenario),
        "on_path": costs.on_path,
        "slowdown": costs.slowdown,
    }
