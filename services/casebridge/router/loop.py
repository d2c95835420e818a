"""The router's Kafka loop: consume a batch of outbox records, step each (step.py), produce every
output and state change, and commit them with the consumed offsets in ONE Kafka transaction
(KIP-447: ``send_offsets_to_transaction`` with the consumer's group metadata fences a worker that
lost its partitions). A batch commits whole or not at all: after an abort the consumer is sought
back to the batch's first offsets and the batch's state changes, kept in a layer, are dropped.

Partition p of every ``cb.out.*`` topic goes to one worker (range assignor, the same partition
count everywhere); on assignment the worker reads its partitions of ``cb.router.state`` back to
their end before it routes anything. More workers with the same group id share the partitions.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from casebridge.core import relay, topics
from casebridge.core.issued import ROUTER
from casebridge.router import state as tables
from casebridge.router.step import Ctx, Out, Record, Step, expire, step
from casebridge.runtime import ckafka
from casebridge.runtime.logging import get_logger
from casebridge.runtime.settings import Settings
from casebridge.runtime.world import World

log = get_logger("casebridge.router")
GROUP = "casebridge-router"
OUTBOXES = r"^cb\.out\..+"  # every outbox, also of participants added later
RESTART_EXIT = 75  # EX_TEMPFAIL: the producer cannot go on (fenced); a supervisor restarts the worker
TXN_TIMEOUT_MS = 15_000  # a killed worker's open transaction blocks read_committed readers this long
EXPIRE_EVERY = 60.0  # seconds between sweeps of stale event ids


class Fatal(Exception):
    """The transactional producer cannot continue (fenced by a newer instance of its id)."""


class RecordFault(Exception):
    """Kafka refused an output because of the record itself (its size, a header)."""

    def __init__(self, at: tuple[str, int, int], error: KafkaError) -> None:
        super().__init__(error.str())
        self.at, self.error = at, error


class Router:
    """One router worker: a consumer in the router's group and a transactional producer."""

    def __init__(self, settings: Settings, world: World, *, group: str = GROUP, max_batch: int = 1000,
                 max_wait: float = 0.05, verifiers: int = 2,
                 before_commit: Callable[[Sequence[Record]], None] | None = None) -> None:
        self.settings, self.world, self.group = settings, world, group
        self.max_batch, self.max_wait, self.before_commit = max_batch, max_wait, before_commit
        self.instance = settings.instance_id or uuid.uuid4().hex[:12]
        self.identity = world.identity(ROUTER)
        self.states: dict[int, tables.PartitionState] = {}
        self.poison: set[tuple[str, int, int]] = set()
        self.failed: KafkaError | None = None
        self.routed = 0
        self.expired_at = time.monotonic()
        self.pool = ThreadPoolExecutor(verifiers) if verifiers > 1 else None
        self.consumer = self.new_consumer()
        self.producer = self.new_producer()

    # --- clients -------------------------------------------------------------------------------
    def new_consumer(self) -> Consumer:
        extra: dict[str, Any] = {"session.timeout.ms": 10_000, "heartbeat.interval.ms": 2_000}
        if self.settings.instance_id:  # static membership: a restarted worker takes its partitions back
            extra["group.instance.id"] = self.settings.instance_id
        consumer = ckafka.consumer(self.settings, self.group, **extra)
        consumer.subscribe([OUTBOXES], on_assign=self.on_assign, on_revoke=self.on_revoke,
                           on_lost=self.on_revoke)
        return consumer

    def new_producer(self) -> Producer:
        producer = ckafka.transactional_producer(
            self.settings, f"{self.group}-{self.instance}", **{"transaction.timeout.ms": TXN_TIMEOUT_MS})
        producer.init_transactions(60)
        return producer

    # --- assignment ----------------------------------------------------------------------------
    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = sorted({tp.partition for tp in partitions} - self.states.keys())
        for number, restored in restore(self.settings, numbers).items():
            self.states[number] = restored
        log.info("router_assigned", partitions=sorted({tp.partition for tp in partitions}),
                 outboxes=len({tp.topic for tp in partitions}), restored=numbers,
                 worker=self.instance)

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for number in {tp.partition for tp in partitions}:
            self.states.pop(number, None)
        log.info("router_revoked", partitions=sorted({tp.partition for tp in partitions}),
                 worker=self.instance)

    # --- the loop --------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> int:
        log.info("router_up", group=self.group, consumes=OUTBOXES, worker=self.instance,
                 transactional_id=f"{self.group}-{self.instance}")
        try:
            while not stop.is_set():
                if self.world.directory.expires_at <= datetime.now(UTC):
                    self.wait_for_directory(stop)
                    continue
                messages = self.consumer.consume(self.max_batch, self.max_wait)
                batch = [m for m in messages if not self.is_error(m)]
                if batch:
                    self.route(batch)
                elif time.monotonic() - self.expired_at > EXPIRE_EVERY:
                    self.sweep()
        except Fatal as exc:
            log.error("router_fatal", error=str(exc), action=f"exit {RESTART_EXIT}; restart the worker")
            return RESTART_EXIT
        finally:
            self.close()
        return 0

    def route(self, messages: list[Message]) -> None:
        """Route one batch in one transaction; again, from its first offsets, until it commits."""
        while True:
            try:
                if self.attempt(messages):
                    return
            except RecordFault as fault:
                log.warning("record_refused_by_kafka", topic=fault.at[0], partition=fault.at[1],
                            offset=fault.at[2], error=fault.error.name(), action="quarantine as oversized")
                self.poison.add(fault.at)
                self.abort()
            self.rewind(messages)

    def attempt(self, messages: list[Message]) -> bool:
        """One try of a batch: True when its transaction committed."""
        now = datetime.now(UTC)
        ctx = Ctx(self.world.context(now), self.identity, poison=frozenset(self.poison))
        records = [Record(m.topic(), m.partition(), m.offset(), m.key(), m.value()) for m in messages]
        admitted = self.admit_all(records, ctx)
        views = {p: self.states.setdefault(p, tables.PartitionState()).layer()
                 for p in {r.partition for r in records}}
        pending: dict[int, list[tables.Change]] = {p: [] for p in views}
        self.failed = None
        self.producer.begin_transaction()
        for record, verified in zip(records, admitted, strict=True):
            result = step(views[record.partition], record, ctx, verified)
            self.emit(record, result)
            views[record.partition].apply(result.changes)
            pending[record.partition] += result.changes
        if self.before_commit is not None:
            self.before_commit(records)
        offsets = next_offsets(messages)
        if not self.commit(offsets):
            return False
        for number, changes in pending.items():
            self.states[number].apply(changes)
        self.routed += len(records)
        return True

    def admit_all(self, records: list[Record], ctx: Ctx) -> list[Any]:
        """Verify every record's signature first, on ``verifiers`` threads (Ed25519 in cryptography
        releases the GIL); a pure function of the bytes and the directory."""
        def admit(r: Record) -> Any:
            return relay.admit(r.value or b"", ctx.relay)
        if self.pool is None or len(records) < 8:
            return [admit(r) for r in records]
        return list(self.pool.map(admit, records, chunksize=max(1, len(records) // 8)))

    def emit(self, record: Record, result: Step) -> None:
        for out in result.outgoing:
            self.produce(out, record.at)
        for change in result.changes:
            key, value = tables.encode(change)
            self.produce(Out(topics.ROUTER_STATE, key, value, partition=record.partition), record.at)
        event = "routed" if result.outcome == "delivered" else result.outcome
        log.info(event, topic=record.topic, partition=record.partition, offset=record.offset,
                 outcome=result.outcome, **result.log)

    def produce(self, out: Out, at: tuple[str, int, int]) -> None:
        extra: dict[str, Any] = {} if out.partition is None else {"partition": out.partition}
        while True:
            try:
                self.producer.produce(out.topic, out.value, out.key, headers=list(out.headers),
                                      on_delivery=self.delivered, **extra)
                return
            except BufferError:  # the producer's queue is full: let it drain
                self.producer.poll(0.05)
            except KafkaException as exc:
                raise RecordFault(at, exc.args[0]) from exc

    def delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None and self.failed is None:
            self.failed = error

    def commit(self, offsets: list[TopicPartition]) -> bool:
        """Send the offsets and commit; False when the transaction had to be aborted."""
        try:
            self.producer.send_offsets_to_transaction(offsets, self.consumer.consumer_group_metadata(), 30)
            while True:
                try:
                    self.producer.commit_transaction(30)
                    return True
                except KafkaException as exc:
                    if not exc.args[0].retriable():
                        raise
                    log.warning("kafka_retry", what="commit", error=exc.args[0].name())
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            log.warning("transaction_aborted", error=error.name(), why=error.str(), delivery=str(self.failed))
            if error.fatal():
                self.renew_producer(error)
            else:
                self.abort()
            return False

    def abort(self) -> None:
        while True:
            try:
                self.producer.abort_transaction(30)
                return
            except KafkaException as exc:
                if exc.args[0].fatal():
                    self.renew_producer(exc.args[0])
                    return
                if not exc.args[0].retriable():
                    log.warning("abort_failed", error=exc.args[0].name())
                    return
                time.sleep(0.5)

    def renew_producer(self, error: KafkaError) -> None:
        """A fatal producer error: a new producer of the same transactional id (its epoch fences
        the old one); if that fails too, the worker is fenced for good."""
        log.warning("producer_renewed", error=error.name())
        self.producer.flush(1)
        try:
            self.producer = self.new_producer()
        except KafkaException as exc:
            raise Fatal(exc.args[0].str()) from exc

    def rewind(self, messages: list[Message]) -> None:
        """Seek each partition of the batch back to its first offset in the batch."""
        for tp in first_offsets(messages):
            try:
                self.consumer.seek(tp)
            except KafkaException as exc:  # no longer ours (rebalanced away): its new owner reads it
                log.info("rewind_skipped", topic=tp.topic, partition=tp.partition, why=exc.args[0].name())

    def sweep(self) -> None:
        """Delete, in one transaction, the event ids of envelopes too old to be accepted now."""
        self.expired_at = time.monotonic()
        ctx = Ctx(self.world.context(datetime.now(UTC)), self.identity)
        results = {p: expire(s, p, ctx) for p, s in self.states.items()}
        if not any(r.changes for r in results.values()):
            return
        self.producer.begin_transaction()
        for number, result in results.items():
            for change in result.changes:
                key, value = tables.encode(change)
                self.produce(Out(topics.ROUTER_STATE, key, value, partition=number), ("sweep", number, 0))
        try:
            self.producer.commit_transaction(30)
        except KafkaException as exc:
            log.warning("sweep_aborted", error=exc.args[0].name())
            self.abort()
            return
        for number, result in results.items():
            self.states[number].apply(result.changes)
            log.info("expired", partition=number, event_ids=len(result.changes))

    def wait_for_directory(self, stop: threading.Event) -> None:
        """Fail closed: route nothing while the directory in use has expired; keep the group."""
        log.error("directory_expired", expired_at=self.world.directory.expires_at.isoformat(),
                  fix="publish a current directory on cb.directory")
        assignment = self.consumer.assignment()
        self.consumer.pause(assignment)
        while not stop.is_set() and self.world.directory.expires_at <= datetime.now(UTC):
            self.consumer.poll(1.0)
        self.consumer.resume(self.consumer.assignment())

    def is_error(self, message: Message) -> bool:
        error = message.error()
        if error is None:
            return False
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("consume_error", error=error.name(), why=error.str())
        return True

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False)
        closer = threading.Thread(target=self.consumer.close, daemon=True)  # never hang on a dead broker
        closer.start()
        closer.join(3)
        self.producer.flush(1)


def next_offsets(messages: Sequence[Message]) -> list[TopicPartition]:
    last: dict[tuple[str, int], int] = {}
    for m in messages:
        last[(m.topic(), m.partition())] = max(m.offset(), last.get((m.topic(), m.partition()), -1))
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]


def first_offsets(messages: Sequence[Message]) -> list[TopicPartition]:
    first: dict[tuple[str, int], int] = {}
    for m in messages:
        first.setdefault((m.topic(), m.partition()), m.offset())
    return [TopicPartition(t, p, o) for (t, p), o in first.items()]


def restore(settings: Settings, numbers: Sequence[int]) -> dict[int, tables.PartitionState]:
    """Read partitions ``numbers`` of ``cb.router.state`` from their beginning to their end
    (committed records only) into one state each."""
    states = {n: tables.PartitionState() for n in numbers}
    if not numbers:
        return states
    reader = ckafka.consumer(settings, f"{GROUP}-restore", **{"enable.partition.eof": True})
    reader.assign([TopicPartition(topics.ROUTER_STATE, n, 0) for n in numbers])
    remaining, count = set(numbers), 0
    try:
        while remaining:
            for m in reader.consume(1000, 1.0):
                error = m.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        remaining.discard(m.partition())
                    else:
                        log.warning("restore_error", error=error.name(), why=error.str())
                    continue
                states[m.partition()].apply([tables.decode(m.key(), m.value())])
                count += 1
    finally:
        reader.close()
    log.info("router_state_restored", partitions=list(numbers), records=count)
    return states
