"""Ingestion tasks on a NATS JetStream work queue (`qv worker --queue nats://host:4222/NAME`).

The job catalog stays the record of every task (status, attempts, counts, progress in
`qv jobs`); the stream only says which task to run next. A job queued on `NAME` publishes
one message per task id to the stream `<PREFIX>_TASKS_<NAME>` (retention `WorkQueue`: a
message is gone once acked). Workers pull from one durable consumer with `ack_wait` equal
to the task lease, and tell the server "in progress" with every heartbeat. A worker that
dies stops doing so: the server hands the message to another worker after `ack_wait`,
which leases the task in the catalog as usual (lapsed leases are reaped first).

    queue = NatsTaskQueue("nats://127.0.0.1:4222?prefix=qv", "default", lease_s=60)
    queue.publish(["task-1", "task-2"])
    delivery = queue.next(timeout_s=0.5)      # or None
    ...; delivery.touch(); ...; delivery.ack()  # or delivery.retry()
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import nats
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from quantivista.bus.plumbing import LoopThread, url_prefix
from quantivista.errors import BusError

__all__ = ["Delivery", "NatsTaskQueue", "TaskQueues"]

T = TypeVar("T")
_BAD = re.compile(r"[^A-Za-z0-9_-]")


@dataclass
class Delivery:
    """One task id handed to this worker; ack, retry or touch it from any thread."""

    task_id: str
    attempt: int  # the server's delivery count of this message
    _msg: Msg
    _queue: NatsTaskQueue

    def touch(self) -> None:
        """Reset the server's ack timer (the task is still running here)."""
        self._queue._run(self._msg.in_progress())

    def ack(self) -> None:
        """The task is finished here (succeeded, or failed for good): remove it."""
        self._queue._run(self._msg.ack())

    def retry(self, delay_s: float = 0.0) -> None:
        """Hand the task back for another delivery (after `delay_s`)."""
        self._queue._run(self._msg.nak(delay=delay_s or None))


class NatsTaskQueue:
    """Task ids of one queue on a JetStream work-queue stream, pulled by workers."""

    def __init__(
        self, url: str, queue: str, *, lease_s: float = 60.0, timeout_s: float = 10.0
    ) -> None:
        parts = urlsplit(url)
        prefix = url_prefix(url)
        self.queue = queue
        self.stream = f"{_BAD.sub('_', prefix.upper())}_TASKS_{_BAD.sub('_', queue)}"
        self.subject = f"{prefix}.tasks.{_BAD.sub('_', queue)}"
        self.lease_s = lease_s
        self.timeout_s = timeout_s
        self._loop = LoopThread("qv-task-queue", timeout_s)
        server = f"nats://{parts.hostname or '127.0.0.1'}:{parts.port or 4222}"
        try:
            self._nc = self._run(
                nats.connect(
                    server,
                    connect_timeout=timeout_s,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.25,
                )
            )
            self._js = self._nc.jetstream(timeout=timeout_s)
            self._run(self._declare())
        except Exception as exc:
            self._loop.stop()
            raise BusError(f"cannot open the task queue {self.stream} at {server}: {exc}") from None
        self._sub: Any = None
        self._sub_lock = threading.Lock()

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return self._loop.run(coro, timeout)

    async def _declare(self) -> None:
        config = StreamConfig(
            name=self.stream,
            subjects=[self.subject],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=120.0,  # a task published twice (a retried submit) runs once
        )
        try:
            await self._js.add_stream(config)
        except BadRequestError:  # exists (same config): fine
            await self._js.update_stream(config)

    # -- producers -------------------------------------------------------------------------
    def publish(self, task_ids: Sequence[str]) -> None:
        """Queue task ids (each once within the stream's duplicate window)."""

        async def send() -> None:
            acks = [
                await self._js.publish(self.subject, t.encode(), headers={"Nats-Msg-Id": t})
                for t in task_ids
            ]
            del acks

        self._run(send(), timeout=self.timeout_s + len(task_ids) * 0.1)

    def requeue(self, task_id: str, attempt: int) -> None:
        """Queue a task again as a new message (another attempt after a failure)."""
        self._run(
            self._js.publish(
                self.subject, task_id.encode(), headers={"Nats-Msg-Id": f"{task_id}#{attempt}"}
            )
        )

    # -- consumers -------------------------------------------------------------------------
    def _subscription(self) -> Any:
        with self._sub_lock:
            if self._sub is None:
                config = ConsumerConfig(
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=self.lease_s,
                    max_deliver=-1,  # the catalog counts attempts and fails a task for good
                    max_ack_pending=-1,
                )
                self._sub = self._run(
                    self._js.pull_subscribe(
                        self.subject, durable="workers", stream=self.stream, config=config
                    )
                )
            return self._sub

    def next(self, timeout_s: float = 0.5) -> Delivery | None:
        """Return the next task id for this worker, or None after `timeout_s`."""
        sub = self._subscription()

        async def one() -> list[Msg]:
            try:
                return list(await sub.fetch(1, timeout=timeout_s))
            except (TimeoutError, NatsTimeout):
                return []

        msgs = self._run(one(), timeout=timeout_s + self.timeout_s)
        if not msgs:
            return None
        msg = msgs[0]
        return Delivery(msg.data.decode(), int(msg.metadata.num_delivered), msg, self)

    def pending(self) -> int:
        """Return the messages in the stream (queued or delivered but not acked)."""

        async def count() -> int:
            info = await self._js.stream_info(self.stream)
            return int(info.state.messages)

        return self._run(count())

    def delete(self) -> None:
        """Delete the stream and its consumer (tests)."""
        self._run(self._js.delete_stream(self.stream))

    def close(self) -> None:
        """Close the connection and stop the loop thread (acks went out as they happened)."""
        if self._loop.closed:
            return
        with contextlib.suppress(Exception):  # a dead server: nothing to say
            self._run(self._nc.close(), timeout=self.timeout_s)
        self._loop.stop()


class TaskQueues:
    """The task queues of one NATS server, opened on first use and closed together."""

    def __init__(self, url: str, *, lease_s: float) -> None:
        self.url = url
        self.lease_s = lease_s
        self._queues: dict[str, NatsTaskQueue] = {}
        self._lock = threading.Lock()

    def get(self, queue: str) -> NatsTaskQueue:
        """Return the task queue `queue`, opening it (and its stream) on first use."""
        with self._lock:
            if queue not in self._queues:
                self._queues[queue] = NatsTaskQueue(self.url, queue, lease_s=self.lease_s)
            return self._queues[queue]

    def publish(self, queue: str, task_ids: list[str]) -> None:
        """Queue task ids on `queue` (the `IngestionService.publish` hook)."""
        self.get(queue).publish(task_ids)

    def close(self) -> None:
        """Close every queue opened."""
        with self._lock:
            queues, self._queues = list(self._queues.values()), {}
        for queue in queues:
            queue.close()
