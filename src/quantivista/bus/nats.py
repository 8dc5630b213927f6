"""The NATS JetStream backend of the `Broker` contract (nats-py, driven from a loop thread).

    broker = NatsBroker("nats://127.0.0.1:4222?prefix=qv")

A topic is one stream (`QV_bars_raw_1m`, its topic name in the description) with one subject
per partition (`qv.bars.raw.1m.p0`); offsets are stream sequences. A consumer group is one
durable pull consumer per partition (`<group>_p0`), explicit acks, redelivery by the server
after `ack_wait_s` or at once on a nack. After `max_deliver` attempts the subscription moves
the message to the dead-letter topic (done client-side, like every backend, so the DLQ holds
the error text). The API is synchronous: calls run on a private event loop thread, so the
pipeline stages (plain functions) use it like the in-memory broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import nats
from nats.aio.msg import Msg
from nats.errors import MaxPayloadError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from quantivista.bus.base import (
    BrokerBase,
    Member,
    Message,
    StartAt,
    SubscriptionBase,
    dead_letter_topic,
    partition_of,
)
from quantivista.bus.plumbing import LoopThread
from quantivista.errors import BusError, BusUsageError, MessageTooLargeError
from quantivista.ops.metrics import BUS_DUPLICATES

__all__ = ["NatsBroker"]

T = TypeVar("T")
_KEY = "qv-key"
log = logging.getLogger(__name__)
_SETTLED_KEPT = 10_000  # settled deliveries remembered per subscription (a late duplicate)
_BAD = re.compile(r"[^A-Za-z0-9_-]")


class NatsBroker(BrokerBase):
    """Durable topics on NATS JetStream."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str | None = None,
        timeout_s: float = 10.0,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        parts = self._configure(url, prefix, timeout_s)
        self._partitions: dict[str, int] = {}
        self._loop = LoopThread("qv-nats", timeout_s)
        # publishes go out in the order they were started (a key's messages keep their order
        # even when a caller does not wait for one publish before starting the next)
        self._send: asyncio.Lock | None = None
        server = f"nats://{parts.hostname or '127.0.0.1'}:{parts.port or 4222}"
        try:
            self._nc = self._run(
                nats.connect(
                    server,
                    connect_timeout=timeout_s,
                    max_reconnect_attempts=-1,  # a restarted server is found again
                    reconnect_time_wait=0.25,
                    allow_reconnect=True,
                    **(options or {}),  # TLS, user or creds (bus/security.py)
                )
            )
        except Exception as exc:
            self._loop.stop()
            raise BusError(f"cannot connect to NATS at {server}: {exc}") from None
        self._js = self._nc.jetstream(timeout=timeout_s)

    # -- plumbing ----------------------------------------------------------------------------
    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return self._loop.run(coro, timeout)

    def _stream(self, topic: str) -> str:
        return f"{_BAD.sub('_', self.prefix.upper())}_{_BAD.sub('_', topic)}"

    def _subject(self, topic: str, partition: int) -> str:
        return f"{self.prefix}.{topic}.p{partition}"

    @property
    def connected(self) -> bool:
        """Say whether the connection is up (readiness)."""
        return bool(self._nc.is_connected)

    # -- topics ------------------------------------------------------------------------------
    def create_topic(self, topic: str, *, partitions: int = 1) -> None:
        self._run(self._create(topic, partitions))
        self._run(self._create(dead_letter_topic(topic), 1))

    async def _create(self, topic: str, partitions: int) -> None:
        config = StreamConfig(
            name=self._stream(topic),
            description=topic,
            subjects=[self._subject(topic, p) for p in range(partitions)],
            storage=StorageType.FILE,
        )
        try:
            await self._js.add_stream(config)
            self._partitions[topic] = partitions
        except BadRequestError:  # it exists (perhaps with other settings): keep it as it is
            await self._partitions_of(topic)

    async def _partitions_of(self, topic: str) -> int:
        known = self._partitions.get(topic)
        if known is not None:
            return known
        try:
            info = await self._js.stream_info(self._stream(topic))
        except NotFoundError:
            await self._create(topic, 1)
            return self._partitions.setdefault(topic, 1)
        n = len(info.config.subjects or []) or 1
        self._partitions[topic] = n
        return n

    def topics(self) -> list[str]:
        async def names() -> list[str]:
            infos = await self._js.streams_info()
            head = f"{_BAD.sub('_', self.prefix.upper())}_"
            return sorted(
                str(i.config.description or i.config.name)
                for i in infos
                if (i.config.name or "").startswith(head)
            )

        return self._run(names())

    def max_message_bytes(self) -> int | None:
        """Return the server's `max_payload` (1 MB by default)."""
        return int(self._nc.max_payload)

    def last_offset(self, topic: str) -> int:
        async def last() -> int:
            try:
                info = await self._js.stream_info(self._stream(topic))
            except NotFoundError:
                raise BusUsageError("no such topic", topic=topic) from None
            return int(info.state.last_seq)

        return self._run(last())

    def delete_topic(self, topic: str) -> None:
        """Delete `topic` and its dead-letter topic (tests clean up with this)."""

        async def delete() -> None:
            for name in (topic, dead_letter_topic(topic)):
                with contextlib.suppress(NotFoundError):
                    await self._js.delete_stream(self._stream(name))
                self._partitions.pop(name, None)

        self._run(delete())

    # -- publish -----------------------------------------------------------------------------
    def publish_many(
        self, topic: str, items: Sequence[tuple[str | None, bytes, Mapping[str, str] | None]]
    ) -> list[int]:
        return self._run(self._publish_many(topic, items))

    def publish_async(
        self, topic: str, items: Sequence[tuple[str | None, bytes, Mapping[str, str] | None]]
    ) -> Future[list[int]]:
        """Send on the loop thread without waiting (JetStream acks come back pipelined)."""
        return self._loop.submit(self._publish_many(topic, items))

    async def _publish_many(
        self, topic: str, items: Sequence[tuple[str | None, bytes, Mapping[str, str] | None]]
    ) -> list[int]:
        if self._send is None:
            self._send = asyncio.Lock()  # on the loop thread (FIFO: calls keep their order)
        async with self._send:
            n = await self._partitions_of(topic)
            stream = self._stream(topic)
            futures = []
            for key, value, headers in items:  # sent in order on one connection
                h = dict(headers or {})
                if key is not None:
                    h[_KEY] = key
                subject = self._subject(topic, partition_of(key, n))
                try:
                    sent = await self._js.publish_async(
                        subject, value, stream=stream, headers=h or None
                    )
                except MaxPayloadError:
                    raise MessageTooLargeError(
                        "message larger than the server's max_payload",
                        topic=topic, key=key, bytes=len(value), limit=self.max_message_bytes(),
                    ) from None  # fmt: skip
                futures.append(sent)
        try:
            acks = await asyncio.gather(*futures)
        except Exception as exc:
            raise BusError(f"publish to {topic} failed: {exc}", topic=topic) from None
        return [int(a.seq) for a in acks]

    # -- consume -----------------------------------------------------------------------------
    def _subscribe(
        self, topic: str, group: str, start: StartAt, member: Member
    ) -> _NatsSubscription:
        async def join() -> list[Any]:
            n = await self._partitions_of(topic)
            config = _consumer_config(start, member.ack_wait_s)
            stream = self._stream(topic)
            if member.count == 1:  # one consumer over every partition: one pull per fetch
                durable = _BAD.sub("_", group)
                return [
                    await self._js.pull_subscribe(
                        f"{self.prefix}.{topic}.*", durable=durable, stream=stream, config=config
                    )
                ]
            return [
                await self._js.pull_subscribe(
                    self._subject(topic, p),
                    durable=_BAD.sub("_", f"{group}_{member.count}_p{p}"),
                    stream=stream,
                    config=config,
                )
                for p in member.partitions(n)
            ]

        return _NatsSubscription(self, topic, group, self._run(join()), member.max_deliver)

    def read(
        self,
        topic: str,
        start: StartAt | None = None,
        *,
        until_offset: int | None = None,
        until_time: datetime | None = None,
        limit: int | None = None,
    ) -> Iterator[Message]:
        last = self.last_offset(topic)
        if until_offset is not None:
            last = min(last, until_offset)
        begin = start or StartAt()
        if begin.latest or last == 0 or (limit is not None and limit <= 0):
            return
        config = _consumer_config(begin, 30.0)
        config.ack_policy = AckPolicy.NONE
        config.inactive_threshold = 60.0
        sub = self._run(
            self._js.pull_subscribe(
                f"{self.prefix}.{topic}.*", stream=self._stream(topic), config=config
            )
        )
        count = 0
        try:
            while True:
                try:
                    batch = self._run(sub.fetch(500, timeout=2.0))
                except TimeoutError:
                    return
                for msg in batch:
                    message = _message(topic, msg)
                    if message.offset > last or (
                        until_time is not None
                        and message.timestamp is not None
                        and message.timestamp > until_time
                    ):
                        return
                    yield message
                    count += 1
                    if limit is not None and count >= limit:
                        return
                    if message.offset == last:
                        return
        finally:
            self._run(sub.unsubscribe())

    def follow(
        self, topic: str, start: StartAt, handler: Callable[[Message], None]
    ) -> Callable[[], None]:
        """Push `topic`'s messages from `start` on to `handler`, in order, as they arrive
        (an ordered push consumer: no group, nothing left on the server, no polling; the
        client re-creates it after a gap or a restart). `handler` runs on the client's loop
        thread and must not block. Return a function that stops following."""

        async def deliver(msg: Msg) -> None:
            handler(_message(topic, msg))

        async def join() -> Any:
            await self._partitions_of(topic)
            base = _consumer_config(start, 30.0)
            config = ConsumerConfig(
                deliver_policy=base.deliver_policy,
                opt_start_seq=base.opt_start_seq,
                opt_start_time=base.opt_start_time,
            )
            return await self._js.subscribe(
                f"{self.prefix}.{topic}.*",
                stream=self._stream(topic),
                cb=deliver,
                ordered_consumer=True,
                config=config,
            )

        sub = self._run(join())

        def stop() -> None:
            with contextlib.suppress(Exception):  # closed already, or the server is away
                self._run(sub.unsubscribe(), timeout=self.timeout_s)

        return stop

    def close(self) -> None:
        if self._loop.closed:
            return
        # acks are sent as they happen: nothing to drain; a dead server: nothing to say
        with contextlib.suppress(Exception):
            self._run(self._nc.close(), timeout=self.timeout_s)
        self._loop.stop()


def _consumer_config(start: StartAt, ack_wait_s: float) -> ConsumerConfig:
    config = ConsumerConfig(
        ack_policy=AckPolicy.EXPLICIT, ack_wait=ack_wait_s, max_deliver=-1, max_ack_pending=-1
    )
    if start.latest:
        config.deliver_policy = DeliverPolicy.NEW
    elif start.offset is not None:
        config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
        config.opt_start_seq = max(start.offset, 1)
    elif start.time is not None:
        config.deliver_policy = DeliverPolicy.BY_START_TIME
        config.opt_start_time = start.time.astimezone(UTC)
    return config


def _left_over(sub: Any) -> list[Msg]:
    """Take the deliveries waiting in a pull subscription's client-side queue (runs on the
    client's loop: the queue is an asyncio one). nats-py keeps no public way to them."""
    queue = getattr(getattr(sub, "_sub", None), "_pending_queue", None)
    out = []
    while queue is not None and not queue.empty():
        msg = queue.get_nowait()
        if isinstance(msg, Msg) and msg.reply.startswith("$JS.ACK."):  # not a status
            out.append(msg)
    return out


def _remember(seen: OrderedDict[Any, None], key: Any) -> None:
    """Add `key` to a bounded memory of recent keys (the oldest forgotten first)."""
    seen[key] = None
    if len(seen) > _SETTLED_KEPT:
        seen.popitem(last=False)


async def _ack_all(msgs: list[Msg]) -> None:
    await asyncio.gather(*(m.ack() for m in msgs))


def _message(topic: str, msg: Msg) -> Message:
    meta = msg.metadata
    headers = {k: v for k, v in (msg.headers or {}).items() if not k.startswith("Nats-")}
    key = headers.pop(_KEY, None)
    partition = int(msg.subject.rsplit(".p", 1)[-1]) if ".p" in msg.subject else 0
    stamp = meta.timestamp
    return Message(
        topic,
        int(meta.sequence.stream),
        msg.data,
        key,
        headers,
        stamp.astimezone(UTC) if stamp is not None else None,
        int(meta.num_delivered or 1),
        partition,
    )


class _NatsSubscription(SubscriptionBase[NatsBroker]):
    def __init__(
        self, broker: NatsBroker, topic: str, group: str, subs: list[Any], max_deliver: int
    ) -> None:
        super().__init__(broker, topic, group, max_deliver)
        self._subs = subs
        self._inflight: dict[int, Msg] = {}
        self._counts: dict[int, int] = {}  # offset -> deliveries seen here, until acked
        # the reply subjects (one per delivery) of the deliveries acked or nacked lately: a
        # pull that outlived its fetch can hand one over again after it was settled
        self._settled: OrderedDict[str, None] = OrderedDict()
        # the offsets acked lately: the server can deliver an acked message anew (a new
        # reply subject) after a pull expired while it was being sent (nats-server 2.9)
        self._acked: OrderedDict[int, None] = OrderedDict()
        self.duplicates = 0  # such deliveries acked again and skipped

    def fetch(self, max_messages: int = 100, timeout_s: float = 1.0) -> list[Message]:
        if not self._subs:
            return []
        msgs = self._broker._run(self._fetch(max_messages, timeout_s), timeout_s + 30)
        out, done = [], []
        for msg in msgs:
            offset = int(msg.metadata.sequence.stream)
            held = self._inflight.get(offset)
            if (held is not None and held.reply == msg.reply) or msg.reply in self._settled:
                continue  # the same delivery seen twice (a pull that outlived its fetch)
            if offset in self._acked:
                done.append(msg)  # applied and acked here already: not applied twice
                continue
            message = _message(self.topic, msg)
            # the server may count a redelivery after an expired pull as a first delivery
            count = max(message.deliveries, self._counts.get(message.offset, 0) + 1)
            self._counts[message.offset] = count
            if count != message.deliveries:
                message = replace(message, deliveries=count)
            self._inflight[message.offset] = msg
            out.append(message)
        if done:  # acked again, so the server stops redelivering them
            self.duplicates += len(done)
            BUS_DUPLICATES.labels(self.group, self.topic).inc(len(done))
            log.warning("%s: %d acked message(s) delivered again, skipped", self.topic, len(done))
            self._broker._run(_ack_all(done))
            for msg in done:
                self._settle(msg)
        out.sort(key=lambda m: m.offset)
        return out

    async def _fetch(self, max_messages: int, timeout_s: float) -> list[Msg]:
        if len(self._subs) == 1:
            try:
                return list(await self._subs[0].fetch(max_messages, timeout=timeout_s))
            except TimeoutError:
                return []
        # several partitions: short pulls on all of them until one has messages (a pull is
        # never cancelled half-way: that would drop the messages it already took)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        share = max(1, max_messages // len(self._subs))
        while True:
            wait = min(0.1, max(deadline - loop.time(), 0.001))
            results = await asyncio.gather(
                *(s.fetch(share, timeout=wait) for s in self._subs), return_exceptions=True
            )
            out = [m for r in results if isinstance(r, list) for m in r]
            for r in results:
                if isinstance(r, BaseException) and not isinstance(r, (NatsTimeout, TimeoutError)):
                    raise BusError(f"fetch from {self.topic} failed: {r}", topic=self.topic)
            if out or loop.time() >= deadline:
                return out

    def ack(self, message: Message) -> None:
        msg = self._inflight.pop(message.offset, None)
        self._counts.pop(message.offset, None)
        if msg is not None:
            self._settle(msg)
            _remember(self._acked, message.offset)
            self._broker._run(msg.ack())

    def _requeue(self, message: Message, delay_s: float) -> None:
        msg = self._inflight.pop(message.offset, None)
        if msg is not None:
            self._settle(msg)
            self._broker._run(msg.nak(delay=delay_s or None))

    def _settle(self, msg: Msg) -> None:
        _remember(self._settled, msg.reply)

    def close(self) -> None:
        async def leave() -> None:
            # others get them now, not after ack_wait: the held ones, and those a pull that
            # outlived its fetch left in the client's queue (an acked one is acked again)
            left = [m for sub in self._subs for m in _left_over(sub)]
            for msg in [*self._inflight.values(), *left]:
                with contextlib.suppress(Exception):
                    acked = int(msg.metadata.sequence.stream) in self._acked
                    await (msg.ack() if acked else msg.nak())
            for sub in self._subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

        self._broker._run(leave())
        self._inflight.clear()
