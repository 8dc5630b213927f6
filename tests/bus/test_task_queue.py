"""The NATS JetStream task queue: work-queue retention, acks, retries and redelivery."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from quantivista.services.workers import split_queue_url

pytestmark = pytest.mark.nats


@pytest.fixture
def queue(nats_url: str) -> Iterator[object]:
    from quantivista.bus.task_queue import NatsTaskQueue

    q = NatsTaskQueue(f"{nats_url}?prefix=qvt{uuid.uuid4().hex[:8]}", "default", lease_s=1.0)
    yield q
    q.delete()
    q.close()


def test_split_queue_url_tells_a_stream_from_a_catalog_queue() -> None:
    assert split_queue_url("backfill") == (None, "backfill")
    assert split_queue_url("nats://127.0.0.1:4222/backfill?prefix=qv") == (
        "nats://127.0.0.1:4222?prefix=qv",
        "backfill",
    )
    assert split_queue_url("nats://h:4222") == ("nats://h:4222", None)


def test_each_task_goes_to_one_worker_and_an_ack_removes_it(queue: object) -> None:
    from quantivista.bus.task_queue import NatsTaskQueue

    assert isinstance(queue, NatsTaskQueue)
    queue.publish(["j/0000", "j/0001", "j/0001"])  # a duplicate publish is dropped
    assert queue.pending() == 2
    first, second = queue.next(), queue.next()
    assert first is not None and second is not None
    assert {first.task_id, second.task_id} == {"j/0000", "j/0001"}
    assert queue.next(timeout_s=0.2) is None  # both delivered, not acked: nobody else gets them
    first.ack()
    second.ack()
    time.sleep(0.1)
    assert queue.pending() == 0  # work-queue retention: acked messages are gone


def test_an_unacked_task_comes_back_after_the_lease_and_touch_keeps_it(queue: object) -> None:
    from quantivista.bus.task_queue import NatsTaskQueue

    assert isinstance(queue, NatsTaskQueue)
    queue.publish(["j/0000", "j/0001"])
    held, dead = queue.next(), queue.next()
    assert held is not None and dead is not None
    for _ in range(4):  # 1.6 s > the 1 s lease: touched, it stays with its worker
        time.sleep(0.4)
        held.touch()
    again = queue.next(timeout_s=2.0)  # the dead worker's task, redelivered
    assert again is not None and again.task_id == dead.task_id and again.attempt == 2
    again.retry()  # a failed attempt: at once to the next worker
    third = queue.next(timeout_s=1.0)
    assert third is not None and third.task_id == dead.task_id and third.attempt == 3
    held.ack()
    third.ack()
    time.sleep(0.1)
    assert queue.pending() == 0


def test_a_worker_given_a_nats_url_serves_that_stream_and_jobs_are_published(
    nats_url: str, tmp_path: object
) -> None:
    from pathlib import Path

    from quantivista.bus.task_queue import NatsTaskQueue
    from quantivista.config import Settings
    from quantivista.runtime import Runtime

    assert isinstance(tmp_path, Path)
    url = f"{nats_url}?prefix=qvt{uuid.uuid4().hex[:8]}"
    settings = Settings(data_dir=tmp_path / "qv", workers={"queue_url": url})
    with Runtime.from_settings(settings) as rt:
        service = rt.worker(f"{url.replace('?', '/backfill?')}", 1, probe_port=0)
        assert service.queue == "backfill" and service.tasks is not None
        job = rt.ingestion.enqueue(["AAA", "BBB", "CCC"], "2024-01-02", "2024-01-05",
                                   queue="backfill", symbols_per_task=2)  # fmt: skip
        delivery = service.tasks.next(timeout_s=2.0)
        assert delivery is not None and delivery.task_id == f"{job.job_id}/0000"
        task = rt.ingestion.claim_task(delivery.task_id, "w1")
        assert task is not None and task.worker == "w1"  # the catalog leases what NATS named
        assert rt.ingestion.claim_task(delivery.task_id, "w2") is None  # held: not twice
        assert rt.ingestion.task_open(delivery.task_id)
        delivery.ack()
    stream = NatsTaskQueue(url, "backfill")
    try:
        assert stream.pending() == 1  # the second task is still queued
    finally:
        stream.delete()
        stream.close()
