"""The job catalog contract on every backend: jobs, tasks and leases, reports, dead letters."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from quantivista.errors import NotFoundError
from quantivista.model.auth import ApiClient, Scope, Tenant
from quantivista.model.jobs import (
    JobStatus,
    JobTask,
    TaskStatus,
)
from quantivista.storage.contracts import Backend, JobCatalog
from samples import T0, job, report

from .conftest import Site, run_together

LEASE = 30.0


def tasks(job_id: str, n: int) -> list[JobTask]:
    return [
        JobTask(task_id=f"{job_id}/{i}", job_id=job_id, seq=i, symbols=[f"S{i}"]) for i in range(n)
    ]


def with_tasks(catalog: JobCatalog, job_id: str, n: int, **kw: Any) -> list[JobTask]:
    catalog.save_job(job(job_id, **kw))
    made = tasks(job_id, n)
    catalog.add_tasks(made)
    return made


@pytest.fixture
def catalog(backend: Backend) -> JobCatalog:
    return backend.catalog


# -- jobs ------------------------------------------------------------------------------------
def test_job_round_trip(catalog: JobCatalog) -> None:
    saved = job(
        "job-1",
        symbols=["AAA", "BBB"],
        timeframe="1d",
        status=JobStatus.SUCCEEDED,
        end_time=T0 + timedelta(seconds=3),
        quality=report("job-1"),
        error_details=[{"symbol": "BBB", "error": "timeout", "nested": {"a": [1, 2.5, None]}}],
    )
    catalog.save_job(saved)
    assert catalog.job("job-1") == saved


def test_saving_a_job_again_updates_it(catalog: JobCatalog) -> None:
    catalog.save_job(job("job-1", status=JobStatus.RUNNING))
    catalog.save_job(
        job("job-1", status=JobStatus.PARTIAL, records_processed=5, end_time=T0 + timedelta(1))
    )
    loaded = catalog.job("job-1")
    assert loaded.status is JobStatus.PARTIAL
    assert loaded.records_processed == 5
    assert len(catalog.jobs()) == 1


def test_unknown_job_raises_not_found(catalog: JobCatalog) -> None:
    with pytest.raises(NotFoundError, match="unknown job") as info:
        catalog.job("nope")
    assert info.value.context["job_id"] == "nope"


def test_jobs_newest_first_with_a_limit_and_a_status(catalog: JobCatalog) -> None:
    for i in (2, 0, 3, 1):
        status = JobStatus.FAILED if i % 2 else JobStatus.SUCCEEDED
        catalog.save_job(job(f"job-{i}", start=T0 + timedelta(minutes=i), status=status))
    assert [j.job_id for j in catalog.jobs()] == ["job-3", "job-2", "job-1", "job-0"]
    assert [j.job_id for j in catalog.jobs(limit=2)] == ["job-3", "job-2"]
    assert [j.job_id for j in catalog.jobs(status=JobStatus.FAILED)] == ["job-3", "job-1"]
    assert catalog.jobs(status=JobStatus.RUNNING) == []


def test_jobs_with_the_same_start_are_newest_saved_first(catalog: JobCatalog) -> None:
    for name in ("a", "b", "c"):
        catalog.save_job(job(name))
    catalog.save_job(job("a", status=JobStatus.RUNNING))  # saving again keeps its place
    assert [j.job_id for j in catalog.jobs()] == ["c", "b", "a"]


def test_jobs_without_a_start_come_last(catalog: JobCatalog) -> None:
    catalog.save_job(job("unstarted", start=None))
    catalog.save_job(job("started"))
    assert [j.job_id for j in catalog.jobs()] == ["started", "unstarted"]


def test_the_catalog_is_shared_by_every_instance(site: Site) -> None:
    first = site.open().catalog
    first.save_job(job("job-1"))
    first.save_report(report("job-1"), created_at=T0)
    first.put_state("k", {"v": 1})
    second = site.open().catalog
    assert second.job("job-1").job_id == "job-1"
    assert len(second.reports("job-1")) == 1
    assert second.get_state("k") == {"v": 1}


# -- tasks and leases ------------------------------------------------------------------------
def test_tasks_come_back_in_order_and_adding_again_replaces(catalog: JobCatalog) -> None:
    made = with_tasks(catalog, "job-1", 3)
    catalog.add_tasks(list(reversed(tasks("job-2", 2))))
    assert catalog.tasks("job-1") == made
    assert [t.seq for t in catalog.tasks("job-2")] == [0, 1]
    catalog.add_tasks([made[1].model_copy(update={"status": TaskStatus.FAILED})])
    assert [t.status for t in catalog.tasks("job-1")] == ["pending", "failed", "pending"]
    assert catalog.tasks("job-404") == []


def test_a_claim_leases_the_oldest_pending_task(catalog: JobCatalog) -> None:
    with_tasks(catalog, "late", 2, start=T0 + timedelta(hours=1))
    with_tasks(catalog, "early", 2)
    now = T0 + timedelta(hours=2)
    task = catalog.claim_task("w1", LEASE, now)
    assert task is not None
    assert (task.task_id, task.status, task.worker, task.attempts) == (
        "early/0", TaskStatus.RUNNING, "w1", 1,
    )  # fmt: skip
    assert task.lease_expires_at == now + timedelta(seconds=LEASE)
    assert task.heartbeat_at == now and task.started_at == now and task.finished_at is None
    assert catalog.tasks("early")[0] == task
    order = [catalog.claim_task("w1", LEASE, now) for _ in range(4)]
    assert [t.task_id if t else None for t in order] == ["early/1", "late/0", "late/1", None]


def test_claims_take_only_tasks_of_live_jobs_and_of_the_job_asked(catalog: JobCatalog) -> None:
    with_tasks(catalog, "done", 1, status=JobStatus.SUCCEEDED)
    with_tasks(catalog, "failed", 1, status=JobStatus.FAILED)
    with_tasks(catalog, "b-running", 2, status=JobStatus.RUNNING)
    with_tasks(catalog, "a-pending", 1)
    picked = catalog.claim_task("w", LEASE, T0, job_id="b-running")
    assert picked is not None and picked.task_id == "b-running/0"
    assert catalog.claim_task("w", LEASE, T0, job_id="done") is None
    rest = [catalog.claim_task("w", LEASE, T0) for _ in range(3)]
    # same start time: by job id, then seq
    assert [t.task_id if t else None for t in rest] == ["a-pending/0", "b-running/1", None]


def test_jobs_without_a_start_are_served_first(catalog: JobCatalog) -> None:
    with_tasks(catalog, "dated", 1)
    with_tasks(catalog, "undated", 1, start=None)
    first = catalog.claim_task("w", LEASE, T0)
    assert first is not None and first.job_id == "undated"


def test_a_heartbeat_extends_only_the_holders_lease(catalog: JobCatalog) -> None:
    with_tasks(catalog, "job-1", 1)
    task = catalog.claim_task("w1", LEASE, T0)
    assert task is not None
    later = T0 + timedelta(seconds=20)
    assert catalog.heartbeat(task.task_id, "w1", LEASE, later)
    stored = catalog.tasks("job-1")[0]
    assert stored.lease_expires_at == later + timedelta(seconds=LEASE)
    assert stored.heartbeat_at == later and stored.started_at == T0
    assert not catalog.heartbeat(task.task_id, "w2", LEASE, later)
    assert not catalog.heartbeat("no-such-task", "w1", LEASE, later)
    assert catalog.finish_task(
        task.model_copy(update={"status": TaskStatus.SUCCEEDED}), "w1", later
    )
    assert not catalog.heartbeat(task.task_id, "w1", LEASE, later)  # finished: nothing to hold


def test_finishing_stores_the_outcome(catalog: JobCatalog) -> None:
    with_tasks(catalog, "job-1", 1)
    task = catalog.claim_task("w1", LEASE, T0)
    assert task is not None
    done = task.model_copy(
        update={
            "status": TaskStatus.FAILED,
            "records_processed": 7,
            "records_failed": 2,
            "error_details": [{"symbol": "S0", "error": "boom"}],
        }
    )
    end = T0 + timedelta(seconds=5)
    assert catalog.finish_task(done, "w1", end)
    stored = catalog.tasks("job-1")[0]
    assert stored == done.model_copy(update={"finished_at": end, "lease_expires_at": None})
    assert catalog.claim_task("w2", LEASE, end) is None  # finished tasks are not claimed


def test_open_tasks_counts_pending_and_running_not_finished(catalog: JobCatalog) -> None:
    with_tasks(catalog, "job-1", 3)
    assert catalog.open_tasks("job-1") == 3
    first = catalog.claim_task("w1", LEASE, T0)
    assert first is not None and catalog.open_tasks("job-1") == 3  # running is open
    assert catalog.finish_task(first.model_copy(update={"status": TaskStatus.SUCCEEDED}), "w1", T0)
    second = catalog.claim_task("w1", LEASE, T0)
    assert second is not None
    assert catalog.finish_task(second.model_copy(update={"status": TaskStatus.FAILED}), "w1", T0)
    assert catalog.open_tasks("job-1") == 1
    assert catalog.open_tasks("no-such-job") == 0


def test_a_lapsed_lease_fails_the_job_and_frees_the_task(catalog: JobCatalog) -> None:
    with_tasks(catalog, "job-1", 2, status=JobStatus.RUNNING)
    with_tasks(catalog, "job-2", 1, status=JobStatus.RUNNING)
    a = catalog.claim_task("w1", LEASE, T0)
    b = catalog.claim_task("w2", LEASE, T0)
    c = catalog.claim_task("w3", 2 * LEASE, T0)
    assert a and b and c and (a.job_id, b.job_id, c.job_id) == ("job-1", "job-1", "job-2")
    assert catalog.expire_leases(T0 + timedelta(seconds=LEASE)) == []  # lapses after, not at
    now = T0 + timedelta(seconds=LEASE + 1)
    assert catalog.expire_leases(now) == ["job-1"]
    failed = catalog.job("job-1")
    assert failed.status is JobStatus.FAILED and failed.end_time == now
    details = failed.error_details
    assert [d["kind"] for d in details] == ["lease_expired", "lease_expired"]
    assert [(d["task_id"], d["worker"]) for d in details] == [("job-1/0", "w1"), ("job-1/1", "w2")]
    assert all(d["at"] == now.isoformat() for d in details)
    freed = catalog.tasks("job-1")
    assert [t.status for t in freed] == [TaskStatus.PENDING, TaskStatus.PENDING]
    assert [t.lease_expires_at for t in freed] == [None, None]
    assert catalog.job("job-2").status is JobStatus.RUNNING  # its lease is still good
    assert catalog.tasks("job-2")[0].status is TaskStatus.RUNNING
    assert catalog.expire_leases(now) == []
    # the failed job's tasks wait for a recovery: claims take tasks of live jobs only
    assert catalog.claim_task("w9", LEASE, now) is None


def test_claims_by_queue_take_only_that_queues_jobs(catalog: JobCatalog) -> None:
    with_tasks(catalog, "mine", 1)  # run by its submitter: no worker takes it
    with_tasks(catalog, "q-a", 2, queue="a", start=T0 + timedelta(minutes=1))
    with_tasks(catalog, "q-b", 1, queue="b")
    got = [catalog.claim_task("w", LEASE, T0, queue="a") for _ in range(3)]
    assert [t.task_id if t else None for t in got] == ["q-a/0", "q-a/1", None]
    b = catalog.claim_task("w", LEASE, T0, queue="b")
    assert b is not None and b.task_id == "q-b/0"
    assert catalog.claim_task("w", LEASE, T0, queue="c") is None
    mine = catalog.claim_task("w", LEASE, T0, job_id="mine")
    assert mine is not None and mine.task_id == "mine/0"


def test_a_lapsed_lease_of_a_queued_job_goes_back_to_the_queue(catalog: JobCatalog) -> None:
    with_tasks(catalog, "q", 2, queue="default", max_attempts=2, status=JobStatus.RUNNING)
    first = catalog.claim_task("dead", LEASE, T0, queue="default")
    assert first is not None
    later = T0 + timedelta(seconds=LEASE + 1)
    assert catalog.expire_leases(later) == ["q"]
    job_now = catalog.job("q")
    assert job_now.status is JobStatus.RUNNING and job_now.end_time is None  # not failed
    assert [d["kind"] for d in job_now.error_details] == ["lease_expired"]
    again = catalog.claim_task("alive", LEASE, later, queue="default")
    assert again is not None and again.task_id == first.task_id and again.attempts == 2
    # its second lapse spends the job's max_attempts: the task fails with the reason
    last = later + timedelta(seconds=LEASE + 1)
    assert catalog.expire_leases(last) == ["q"]
    failed = catalog.tasks("q")[0]
    assert failed.status is TaskStatus.FAILED and failed.finished_at == last
    assert failed.error_details[-1]["kind"] == "max_attempts"
    assert "gave up after 2 attempts" in failed.error_details[-1]["message"]
    assert catalog.tasks("q")[1].status is TaskStatus.PENDING
    assert catalog.job("q").status is JobStatus.RUNNING


def test_a_worker_that_lost_its_lease_cannot_finish(catalog: JobCatalog) -> None:
    with_tasks(catalog, "job-1", 1, status=JobStatus.RUNNING)
    task = catalog.claim_task("slow", LEASE, T0)
    assert task is not None
    later = T0 + timedelta(minutes=5)
    catalog.expire_leases(later)
    catalog.save_job(catalog.job("job-1").model_copy(update={"status": JobStatus.RUNNING}))
    again = catalog.claim_task("fast", LEASE, later)
    assert again is not None and again.task_id == task.task_id and again.attempts == 2
    done = task.model_copy(update={"status": TaskStatus.SUCCEEDED, "records_processed": 9})
    assert not catalog.finish_task(done, "slow", later)
    stored = catalog.tasks("job-1")[0]
    assert (stored.worker, stored.status, stored.records_processed) == ("fast", "running", 0)
    assert not catalog.heartbeat(task.task_id, "slow", LEASE, later)
    assert catalog.finish_task(
        again.model_copy(update={"status": TaskStatus.SUCCEEDED}), "fast", later
    )


def test_reset_puts_tasks_of_the_given_statuses_back_to_pending(catalog: JobCatalog) -> None:
    with_tasks(catalog, "job-1", 4, status=JobStatus.RUNNING)
    claimed = [catalog.claim_task("w", LEASE, T0) for _ in range(3)]
    assert all(claimed)
    first, second = claimed[0], claimed[1]
    assert first and second
    catalog.finish_task(first.model_copy(update={"status": TaskStatus.FAILED}), "w", T0)
    catalog.finish_task(second.model_copy(update={"status": TaskStatus.SUCCEEDED}), "w", T0)
    assert catalog.reset_tasks("job-1", [TaskStatus.FAILED]) == 1
    statuses = [(t.status, t.worker) for t in catalog.tasks("job-1")]
    assert statuses == [
        (TaskStatus.PENDING, None), (TaskStatus.SUCCEEDED, "w"),
        (TaskStatus.RUNNING, "w"), (TaskStatus.PENDING, None),
    ]  # fmt: skip
    assert catalog.reset_tasks("job-1", [TaskStatus.RUNNING, TaskStatus.SUCCEEDED]) == 2
    assert {t.status for t in catalog.tasks("job-1")} == {TaskStatus.PENDING}
    assert all(t.lease_expires_at is None for t in catalog.tasks("job-1"))
    assert catalog.reset_tasks("job-404", [TaskStatus.FAILED]) == 0


def test_concurrent_claims_in_threads_never_share_a_task(catalog: JobCatalog) -> None:
    for j in range(3):
        with_tasks(catalog, f"job-{j}", 15)

    def drain(worker: int) -> list[str]:
        got = []
        while (task := catalog.claim_task(f"w{worker}", LEASE, T0)) is not None:
            got.append(task.task_id)
        return got

    with ThreadPoolExecutor(4) as pool:
        claimed = [t for part in pool.map(drain, range(4)) for t in part]
    assert len(claimed) == len(set(claimed)) == 45


def test_concurrent_claims_in_two_processes_never_share_a_task(site: Site) -> None:
    catalog = site.open().catalog
    for j in range(4):
        with_tasks(catalog, f"job-{j}", 20)
    first, second = run_together(
        site.worker("claim", worker="p1"), site.worker("claim", worker="p2")
    )
    assert not set(first) & set(second)
    assert len(first) + len(second) == 80
    assert all(
        t.status is TaskStatus.SUCCEEDED for j in range(4) for t in catalog.tasks(f"job-{j}")
    )


# -- reports, dead letters, state ------------------------------------------------------------
def test_reports_per_job_newest_first(catalog: JobCatalog) -> None:
    catalog.save_report(report("job-1", 0.5), created_at=T0)
    catalog.save_report(report("job-2", 0.7), created_at=T0)
    catalog.save_report(report("job-1", 0.9), created_at=T0 + timedelta(1))
    assert [r.quality_score for r in catalog.reports("job-1")] == [0.9, 0.5]
    assert [r.quality_score for r in catalog.reports()] == [0.9, 0.7, 0.5]
    assert [r.quality_score for r in catalog.reports(limit=1)] == [0.9]
    assert catalog.reports("job-3") == []
    assert catalog.reports("job-1")[0] == report("job-1", 0.9)


def test_dead_letters_round_trip_newest_first(catalog: JobCatalog) -> None:
    first = catalog.add_dead_letter(
        "bars.ingested", {"job_id": "j", "when": T0}, "ValueError: boom", "consumer.a", T0
    )
    second = catalog.add_dead_letter("bars.quarantined", {"rows": 3}, "KeyError: x", None, T0)
    assert second > first > 0
    letters = catalog.dead_letters()
    assert [d["id"] for d in letters] == [second, first]
    old = letters[1]
    assert old["topic"] == "bars.ingested"
    assert old["payload"] == {"job_id": "j", "when": str(T0)}  # non-JSON values as text
    assert old["error"] == "ValueError: boom"
    assert old["handler"] == "consumer.a"
    assert old["created_at"] == T0.isoformat()
    assert letters[0]["handler"] is None
    assert len(catalog.dead_letters(limit=1)) == 1


def test_state_keeps_one_document_per_key(catalog: JobCatalog) -> None:
    assert catalog.get_state("providers") is None
    doc = {"yahoo": {"calls": 3, "p50_ms": 12.5}, "when": T0, "text": "a\u0000b ✓"}
    catalog.put_state("providers", doc)
    assert catalog.get_state("providers") == {
        "yahoo": {"calls": 3, "p50_ms": 12.5},
        "when": str(T0),
        "text": "a\u0000b ✓",
    }
    assert list(catalog.get_state("providers") or {}) == ["yahoo", "when", "text"]  # key order
    catalog.put_state("providers", {"replaced": True})
    assert catalog.get_state("providers") == {"replaced": True}
    catalog.put_state("other", {})
    assert catalog.get_state("other") == {}


def test_setdefault_keeps_the_first_document(catalog: JobCatalog) -> None:
    assert catalog.setdefault_state("key", {"secret": "first"}) == {"secret": "first"}
    assert catalog.setdefault_state("key", {"secret": "second"}) == {"secret": "first"}
    assert catalog.get_state("key") == {"secret": "first"}

    def race(i: int) -> dict[str, Any]:
        return catalog.setdefault_state("raced", {"who": i})

    with ThreadPoolExecutor(4) as pool:
        kept = list(pool.map(race, range(16)))
    assert len({k["who"] for k in kept}) == 1
    assert catalog.get_state("raced") == kept[0]


def test_concurrent_writers_from_threads(catalog: JobCatalog) -> None:
    def work(i: int) -> None:
        catalog.save_job(job(f"job-{i:03d}", start=T0 + timedelta(seconds=i)))
        catalog.save_report(report(f"job-{i:03d}"), created_at=T0)
        catalog.add_dead_letter("t", {"i": i}, "e", None, T0)
        catalog.put_state(f"k{i % 5}", {"i": i})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(40)))
    assert len(catalog.jobs(limit=100)) == 40
    assert len(catalog.reports(limit=100)) == 40
    assert sorted(d["payload"]["i"] for d in catalog.dead_letters(limit=100)) == list(range(40))
    assert all(catalog.get_state(f"k{k}") is not None for k in range(5))


def test_lake_and_postgres_agree_on_a_job_run(twins: tuple[Backend, Backend]) -> None:
    outcomes = []
    for b in twins:
        c = b.catalog
        with_tasks(c, "job-b", 3, status=JobStatus.RUNNING)
        with_tasks(c, "job-a", 2, start=None)
        seen: list[Any] = [c.claim_task("w1", LEASE, T0), c.claim_task("w2", LEASE, T0)]
        seen.append(c.heartbeat("job-a/0", "w1", LEASE, T0 + timedelta(seconds=10)))
        seen.append(c.expire_leases(T0 + timedelta(seconds=35)))
        seen.append(c.claim_task("w3", LEASE, T0 + timedelta(seconds=35)))
        seen.append(c.reset_tasks("job-b", [TaskStatus.RUNNING]))
        seen.append([c.tasks("job-a"), c.tasks("job-b"), c.jobs(), c.job("job-a")])
        c.save_report(report("job-a"), T0)
        c.add_dead_letter("t", {"x": [1, {"y": None}]}, "e", "h", T0)
        seen.append([c.reports(), c.dead_letters()])
        outcomes.append(seen)
    assert outcomes[0] == outcomes[1]


# -- API clients and tenants (the ClientStore, kept by the catalog) --------------------------
def client(client_id: str, tenant: str = "acme", minutes: int = 0, **kw: Any) -> ApiClient:
    return ApiClient(
        client_id=client_id,
        tenant=tenant,
        scopes=[Scope.READ_BARS],
        secret_hash="scrypt$salt$hash",
        created_at=T0 + timedelta(minutes=minutes),
        **kw,
    )


def test_clients_round_trip_and_list_by_creation(backend: Backend) -> None:
    store = backend.clients
    store.save_client(client("c-2", minutes=2))
    store.save_client(client("c-1", minutes=1, name="first"))
    store.save_client(client("b-0", tenant="other", minutes=1))
    assert store.client("c-1") == client("c-1", minutes=1, name="first")
    assert [c.client_id for c in store.clients()] == ["b-0", "c-1", "c-2"]
    assert [c.client_id for c in store.clients("acme")] == ["c-1", "c-2"]
    assert store.clients("nobody") == []
    revoked = client("c-1", minutes=1, revoked_at=T0 + timedelta(hours=1))
    store.save_client(revoked)
    assert store.client("c-1") == revoked
    assert len(store.clients()) == 3
    with pytest.raises(NotFoundError, match="unknown API client"):
        store.client("nope")


def test_tenants_round_trip(backend: Backend) -> None:
    store = backend.clients
    assert store.tenant("acme") is None  # no record: no restrictions
    acme = Tenant(name="acme", datasets=["bars"], symbols=["AAPL", "BRK.*"], timeframes=None)
    store.save_tenant(acme)
    assert store.tenant("acme") == acme
    store.save_tenant(Tenant(name="acme"))
    assert store.tenant("acme") == Tenant(name="acme")


def test_clients_are_seen_by_another_instance(site: Site) -> None:
    site.open().clients.save_client(client("c-1"))
    assert site.open().clients.client("c-1") == client("c-1")
