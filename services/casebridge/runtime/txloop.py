"""The transactional loop of CaseBridge's stream processors (the router, the deadline tracker):
consume a batch, step each record (a pure function of the processor), produce every output and
table change, and commit them with the consumed offsets in ONE Kafka transaction (KIP-447:
``send_offsets_to_transaction`` with the consumer's group metadata fences a worker that lost its
partitions). A batch commits whole or not at all: after an abort the consumer is sought back to
the batch's first offsets and the batch's table changes, kept in a layer, are dropped.

Partition p of every source topic goes to one worker (range assignor, the same partition count
everywhere); on assignment the worker reads partition p of its compacted changelog back to its end
(committed records only) before it handles anything. Workers with the same group id share the
partitions; nothing else is configured. A ``tick`` runs per assigned partition every
``tick_every`` seconds, in a transaction of its own (the router's expiry, the tracker's alerts).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from casebridge.core.stream import Change, Out, Record, Step, Tables
from casebridge.runtime import ckafka
from casebridge.runtime.logging import get_logger
from casebridge.runtime.settings import Settings

log = get_logger("casebridge.txloop")
RESTART_EXIT = 75  # EX_TEMPFAIL: the producer is fenced for good; a supervisor starts the worker again
REFUSED = frozenset({  # init_transactions errors no retry can mend: the worker's rights
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED})
OFFSETS_TIMEOUT = 30.0  # seconds librdkafka is given for send_offsets_to_transaction
OFFSETS_GRACE = 15.0  # and how much longer the loop waits before it gives the producer up
TXN_TIMEOUT_MS = 15_000  # a killed worker's open transaction blocks read_committed readers this long
# A transaction's records are invisible until it commits, and commit_transaction flushes at once
# whatever is queued (librdkafka #3489: flush() overrides linger.ms), so lingering delays nothing a
# reader sees. It batches each partition's records of a transaction into one produce request
# instead of one every 2 ms (librdkafka sends one partition per request, librdkafka#1700): the
# router's librdkafka threads 20-49 -> 2-8 us of CPU an envelope (bench/README.md, 2026-12-02).
TXN_LINGER_MS = 100


class Processor(Protocol):
    """What a stream processor gives the loop; everything but ``prepare`` and ``step`` is wiring."""

    name: str
    group: str
    subscription: list[str]
    changelog: str
    tick_every: float
    routine: frozenset[str]  # outcomes counted in the batch's line, not logged record by record

    def new_tables(self) -> Tables: ...
    def encode(self, change: Change) -> tuple[bytes, bytes | None]: ...
    def decode(self, key: bytes, value: bytes | None) -> Change: ...
    def context(self, now: datetime, poison: frozenset[tuple[str, int, int]]) -> Any: ...
    def prepare(self, records: list[Record], ctx: Any) -> Iterable[Any]: ...
    def step(self, tables: Tables, record: Record, ctx: Any, prepared: Any) -> Step: ...
    def tick(self, tables: Tables, partition: int, ctx: Any) -> Step: ...
    def blocked(self, now: datetime) -> str | None: ...
    def close(self) -> None: ...


class Fatal(Exception):
    """The transactional producer cannot continue (fenced by a newer instance of its id)."""


class RecordFault(Exception):
    """Kafka refused an output because of the record itself (its size, a header)."""

    def __init__(self, at: tuple[str, int, int], error: KafkaError) -> None:
        super().__init__(error.str())
        self.at, self.error = at, error


class Loop:
    """One worker of a processor: a consumer in its group and a transactional producer."""

    def __init__(self, settings: Settings, processor: Processor, *, max_batch: int = 1000,
                 max_wait: float = 0.05,
                 before_commit: Callable[[Sequence[Record]], bool] | None = None) -> None:
        self.settings, self.processor = settings, processor
        self.max_batch, self.max_wait, self.before_commit = max_batch, max_wait, before_commit
        self.instance = settings.instance_id or uuid.uuid4().hex[:12]
        self.transactional_id = f"{processor.group}-{self.instance}"
        self.tables: dict[int, Tables] = {}
        self.offsets_timeout = OFFSETS_TIMEOUT
        self.poison: set[tuple[str, int, int]] = set()
        self.handled = 0
        self.ticked_at = time.monotonic()
        self.consumer = self.new_consumer()
        self.producer = self.new_producer()

    # --- clients -------------------------------------------------------------------------------
    def new_consumer(self) -> Consumer:
        # dynamic membership: a worker that dies loses its partitions after the session timeout. No
        # static group.instance.id: after an outage longer than the session, a static member was
        # fenced for good ("fenced by other consumer with same group.instance.id") and routed
        # nothing more. The instance id still names the transactional id, whose init fences a zombie.
        extra: dict[str, Any] = {"session.timeout.ms": 10_000, "heartbeat.interval.ms": 2_000}
        consumer = ckafka.consumer(self.settings, self.processor.group, **extra)
        consumer.subscribe(self.processor.subscription, on_assign=self.on_assign,
                           on_revoke=self.on_revoke, on_lost=self.on_revoke)
        return consumer

    def new_producer(self) -> Producer:
        """A transactional producer of this worker's id, ready (its ``init_transactions`` fences an
        older one of the id and aborts its open transaction); while the brokers are away, again
        until they answer (also through a coordinator's move or epoch bump). Only a refusal of the
        worker's rights is ``Fatal``."""
        backoff = 0.5
        while True:
            producer = ckafka.transactional_producer(
                self.settings, self.transactional_id,
                **{"transaction.timeout.ms": TXN_TIMEOUT_MS, "linger.ms": TXN_LINGER_MS})
            try:
                producer.init_transactions(30)
                return producer
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.code() in REFUSED:
                    raise Fatal(f"{error.name()}: {error.str()}") from exc
                log.warning("kafka_retry", what="init_transactions", error=error.name(), backoff=backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    # --- assignment ----------------------------------------------------------------------------
    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = sorted({tp.partition for tp in partitions} - self.tables.keys())
        self.tables.update(restore(self.settings, self.processor, numbers))
        log.info(f"{self.processor.name}_assigned", partitions=sorted({tp.partition for tp in partitions}),
                 topics=len({tp.topic for tp in partitions}), restored=numbers, worker=self.instance)

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for number in {tp.partition for tp in partitions}:
            self.tables.pop(number, None)
        log.info(f"{self.processor.name}_revoked", partitions=sorted({tp.partition for tp in partitions}),
                 worker=self.instance)

    # --- the loop --------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> int:
        log.info(f"{self.processor.name}_up", group=self.processor.group,
                 consumes=self.processor.subscription, worker=self.instance,
                 transactional_id=self.transactional_id)
        try:
            while not stop.is_set():
                why = self.processor.blocked(datetime.now(UTC))
                if why is not None:
                    self.wait_while_blocked(stop, why)
                    continue
                messages = ckafka.take_batch(self.consumer, self.max_batch, self.max_wait)
                batch = [m for m in messages if not self.is_error(m)]
                if batch:
                    self.handle(batch)
                if time.monotonic() - self.ticked_at > self.processor.tick_every:
                    self.tick()
        except Fatal as exc:
            log.error(f"{self.processor.name}_fatal", error=str(exc),
                      action=f"exit {RESTART_EXIT}; restart the worker")
            return RESTART_EXIT
        finally:
            self.close()
        return 0

    def handle(self, messages: list[Message]) -> None:
        """One batch in one transaction. When it aborts, the consumer is sought back to the batch's
        first offsets and the next poll reads it again (or its new owner does, after a rebalance)."""
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
        ctx = self.processor.context(datetime.now(UTC), frozenset(self.poison))
        records = [Record(m.topic(), m.partition(), m.offset(), m.key(), m.value(), tuple(m.headers() or ()))
                   for m in messages]
        prepared = self.processor.prepare(records, ctx)
        views = {p: self.tables.setdefault(p, self.processor.new_tables()).layer()
                 for p in {r.partition for r in records}}
        pending: dict[int, list[Change]] = {p: [] for p in views}
        outcomes: Counter[str] = Counter()
        notable: list[tuple[Record, Step]] = []  # a line each, once committed
        self.producer.begin_transaction()
        for record, ready in zip(records, prepared, strict=True):
            result = self.processor.step(views[record.partition], record, ctx, ready)
            for out in result.outgoing:
                self.produce(out, record.at)
            views[record.partition].apply(result.changes)
            pending[record.partition] += result.changes
            outcomes[result.outcome] += 1
            if result.log and result.outcome not in self.processor.routine:
                notable.append((record, result))
        for number, changes in pending.items():
            self.write_changes(number, changes)
        if self.before_commit is not None:  # fault injection (tests): False aborts the batch
            self.producer.flush(30)
            if not self.before_commit(records):
                log.warning("transaction_aborted", error="injected", why="before_commit refused the batch")
                self.abort()
                return False
        if not self.commit(ckafka.next_offsets(messages)):
            return False
        for number, changes in pending.items():
            self.tables[number].apply(changes)
        self.handled += len(records)
        self.say_committed(records, outcomes, notable)
        return True

    def say_committed(self, records: list[Record], outcomes: Counter[str],
                      notable: list[tuple[Record, Step]]) -> None:
        """What a committed batch did: one line with its outcomes counted (the routine ones, e.g.
        every delivery, are in ``cb.audit`` record by record), and a line for each other record
        that did something. Logged after the commit, so no line tells of an aborted batch."""
        log.info(f"{self.processor.name}_batch", records=len(records), outcomes=dict(outcomes),
                 partitions=sorted({r.partition for r in records}), worker=self.instance)
        for record, result in notable:
            log.info(result.outcome, topic=record.topic, partition=record.partition, offset=record.offset,
                     outcome=result.outcome, **result.log)

    def tick(self) -> None:
        """The processor's periodic step for every assigned partition, in one transaction."""
        self.ticked_at = time.monotonic()
        ctx = self.processor.context(datetime.now(UTC), frozenset())
        results = {p: self.processor.tick(t, p, ctx) for p, t in self.tables.items()}
        if not any(r.outgoing or r.changes for r in results.values()):
            return
        self.producer.begin_transaction()
        for number, result in results.items():
            self.emit(number, result, ("tick", number, 0))
        if not self.commit([]):
            return
        for number, result in results.items():
            self.tables[number].apply(result.changes)
            if result.outgoing or result.changes:
                log.info(result.outcome, partition=number, **result.log)

    def emit(self, partition: int, result: Step, at: tuple[str, int, int]) -> None:
        for out in result.outgoing:
            self.produce(out, at)
        self.write_changes(partition, result.changes)

    def write_changes(self, partition: int, changes: Sequence[Change]) -> None:
        """The changelog records of a batch's changes: the last value of each key only (the topic
        is compacted, and a sender's chain head moves with every one of its records)."""
        last = {(c.kind, c.key): c for c in changes}
        for change in last.values():
            key, value = self.processor.encode(change)
            self.produce(Out(self.processor.changelog, key, value, partition=partition),
                         (self.processor.changelog, partition, 0))

    def produce(self, out: Out, at: tuple[str, int, int]) -> None:
        """Hand one record to the producer; a failed delivery fails the transaction's commit, so no
        per-record callback is needed (it cost ~10% of the router's CPU)."""
        extra: dict[str, Any] = {} if out.partition is None else {"partition": out.partition}
        if out.headers:
            extra["headers"] = list(out.headers)
        while True:
            try:
                self.producer.produce(out.topic, out.value, out.key, **extra)
                return
            except BufferError:  # the producer's queue is full: let it drain
                self.producer.poll(0.05)
            except KafkaException as exc:
                raise RecordFault(at, exc.args[0]) from exc

    def commit(self, offsets: list[TopicPartition]) -> bool:
        """Send the offsets (if any) and commit; False when the transaction had to be aborted."""
        try:
            if offsets and not self.send_offsets(offsets):
                log.warning("transaction_stalled", what="send_offsets_to_transaction",
                            waited_s=self.offsets_timeout + OFFSETS_GRACE,
                            action="a new producer of the same transactional id (fences the stalled one); "
                                   "the batch is read again")
                self.producer = self.new_producer()  # the stalled one is left to its thread
                return False
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
            log.warning("transaction_aborted", error=error.name(), why=error.str())
            if error.fatal():
                self.renew_producer(error)
            else:
                self.abort()
            return False

    def send_offsets(self, offsets: list[TopicPartition]) -> bool:
        """``send_offsets_to_transaction`` on a thread of its own, watched: False when it has not
        returned ``offsets_timeout`` + OFFSETS_GRACE seconds later. librdkafka does not keep to
        that call's timeout while the group coordinator is away (confluentinc/librdkafka#5456):
        it blocked 600 s in the leader-kill fault test twice (once on 2026-12-01, once on
        2026-12-02), routing nothing meanwhile. Errors it raises are raised here."""
        call: Future[None] = Future()
        producer, metadata = self.producer, self.consumer.consumer_group_metadata()

        def send() -> None:
            try:
                call.set_result(producer.send_offsets_to_transaction(offsets, metadata, self.offsets_timeout))
            except BaseException as exc:  # any error is handed to the loop's thread
                call.set_exception(exc)

        # a daemon thread: a stalled call must not hold the process at its exit
        threading.Thread(target=send, name="send-offsets", daemon=True).start()
        try:
            call.result(self.offsets_timeout + OFFSETS_GRACE)
        except FutureTimeout:
            return False
        return True

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
        """After a fatal producer error: a new producer of the same transactional id (its epoch
        fences the old one); if that fails too, the worker is fenced for good."""
        log.warning("producer_renewed", error=error.name())
        with contextlib.suppress(KafkaException):  # a fenced producer may refuse even to flush
            self.producer.flush(1)
        self.producer = self.new_producer()

    def rewind(self, messages: list[Message]) -> None:
        """Seek each partition of the batch back to its first offset in the batch."""
        for tp in ckafka.first_offsets(messages):
            try:
                self.consumer.seek(tp)
            except KafkaException as exc:  # no longer ours (rebalanced away): its new owner reads it
                log.info("rewind_skipped", topic=tp.topic, partition=tp.partition, why=exc.args[0].name())

    def wait_while_blocked(self, stop: threading.Event, why: str) -> None:
        """Fail closed: handle nothing while blocked (e.g. the directory expired); keep the group."""
        log.error(f"{self.processor.name}_blocked", why=why)
        self.consumer.pause(self.consumer.assignment())
        while not stop.is_set() and self.processor.blocked(datetime.now(UTC)) is not None:
            self.consumer.poll(1.0)
        self.consumer.resume(self.consumer.assignment())

    def is_error(self, message: Message) -> bool:
        error = message.error()
        if error is None:
            return False
        if error.fatal() or error.code() == KafkaError._FATAL:  # this consumer is done for good
            raise Fatal(f"{error.name()}: {error.str()}")
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("consume_error", error=error.name(), why=error.str())
        return True

    def close(self) -> None:
        closer = threading.Thread(target=self.consumer.close, daemon=True)  # never hang on a dead broker
        closer.start()
        closer.join(3)
        self.producer.flush(1)
        self.processor.close()


def restore(settings: Settings, processor: Processor, numbers: Sequence[int]) -> dict[int, Tables]:
    """Read partitions ``numbers`` of the processor's changelog from their beginning to their end
    (committed records only) into one set of tables each."""
    tables = {n: processor.new_tables() for n in numbers}
    if not numbers:
        return tables
    reader = ckafka.consumer(settings, processor.group, **{"enable.partition.eof": True})  # joins nothing
    reader.assign([TopicPartition(processor.changelog, n, 0) for n in numbers])
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
                tables[m.partition()].apply([processor.decode(m.key(), m.value())])
                count += 1
    finally:
        reader.close()
    log.info(f"{processor.name}_state_restored", partitions=list(numbers), records=count)
    return tables
