"""confluent-kafka (librdkafka) clients: producers acks=all + idempotent, consumers read_committed.

These factories are the only place CaseBridge's services make a Kafka client, so no client
default (acks, auto-commit, isolation level, partitioner) leaks in. The partitioner is murmur2,
as Kafka's Java clients (``casebridge.core.topics.partition_for``): partition p of every
``cb.out.*`` topic holds the same cases. librdkafka's calls release the GIL.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition

from casebridge.core.topics import DIRECTORY
from casebridge.runtime.logging import get_logger
from casebridge.runtime.settings import Settings

log = get_logger("casebridge.kafka")

PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,
    "partitioner": "murmur2_random",  # Kafka's Java default for keyed records
    "linger.ms": 2,
    "message.max.bytes": 1_048_576,
}

CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    "isolation.level": "read_committed",
    "partition.assignment.strategy": "range",  # partition p of every outbox on one worker
}


def base_config(settings: Settings) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": settings.sasl_username or "casebridge",
        **settings.librdkafka_auth,
    }


def producer(settings: Settings, **overrides: Any) -> Producer:
    """A durable producer (acks=all, idempotent, murmur2)."""
    return Producer({**base_config(settings), **PRODUCER_DEFAULTS, **overrides})


def transactional_producer(settings: Settings, transactional_id: str, **overrides: Any) -> Producer:
    """A transactional producer; ``init_transactions()`` fences an older one of the same id."""
    return producer(settings, **{"transactional.id": transactional_id, **overrides})


def consumer(settings: Settings, group_id: str, **overrides: Any) -> Consumer:
    """A consumer of committed records that commits only what was handled."""
    return Consumer({**base_config(settings), **CONSUMER_DEFAULTS, "group.id": group_id, **overrides})


def follow_topic(
    settings: Settings, topic: str, apply: Callable[[bytes], None], stop: threading.Event, group: str
) -> threading.Thread:
    """A thread that reads partition 0 of ``topic`` from its beginning and calls ``apply`` on every
    value until ``stop`` is set. It joins no group and commits nothing; ``group`` is the service's
    own group id, the one its principal may use (librdkafka asks that group's coordinator)."""

    def run() -> None:
        reader = consumer(settings, group)
        reader.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        try:
            while not stop.is_set():
                message = reader.poll(0.5)
                if message is None:
                    continue
                if message.error():
                    if message.error().code() != KafkaError._PARTITION_EOF:
                        log.warning("follow_error", topic=topic, error=str(message.error()))
                    continue
                value = message.value()
                if value is not None:
                    apply(value)
        finally:
            reader.close()

    thread = threading.Thread(target=run, name=f"follow-{topic}", daemon=True)
    thread.start()
    return thread


def follow_directory(settings: Settings, holder: Any, stop: threading.Event, group: str) -> threading.Thread:
    """Apply every directory published on ``cb.directory`` to ``holder.world`` (refresh.py's
    rules: verified against the trust anchor, newer than the one in use)."""
    from casebridge.runtime.refresh import apply_directory

    def apply(value: bytes) -> None:
        holder.world = apply_directory(holder.world, value, datetime.now(UTC))

    return follow_topic(settings, DIRECTORY, apply, stop, group)


def take_batch(reader: Consumer, most: int, wait: float) -> list[Message]:
    """Up to ``most`` records: waits up to ``wait`` seconds for the first, then takes what is already
    fetched. (``Consumer.consume(most, wait)`` would wait the whole ``wait`` unless ``most`` arrive,
    adding that wait to every hop at a low rate.)"""
    first = reader.poll(wait)
    if first is None:
        return []
    return [first, *reader.consume(most - 1, 0)] if most > 1 else [first]


def next_offsets(messages: Sequence[Message]) -> list[TopicPartition]:
    """The offsets to commit after ``messages``: one past the last of each partition."""
    last: dict[tuple[str, int], int] = {}
    for m in messages:
        last[(m.topic(), m.partition())] = max(m.offset(), last.get((m.topic(), m.partition()), -1))
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]


def first_offsets(messages: Sequence[Message]) -> list[TopicPartition]:
    """Where ``messages`` began, per partition (to read a batch again)."""
    first: dict[tuple[str, int], int] = {}
    for m in messages:
        first.setdefault((m.topic(), m.partition()), m.offset())
    return [TopicPartition(t, p, o) for (t, p), o in first.items()]


def count_committed(settings: Settings, topics: Iterable[str] | None = None, timeout: float = 30.0
                    ) -> dict[str, int]:
    """Committed records per topic (every topic the cluster lists, or ``topics``), read to the
    end with a group-less read_committed consumer: transaction markers and aborted records, which
    take offsets too, are not counted."""
    probe = consumer(settings, "casebridge-count")
    try:
        listed = probe.list_topics(timeout=timeout).topics
        wanted = sorted(listed) if topics is None else sorted(set(topics) & set(listed))
        counts = {t: 0 for t in wanted}
        ends: dict[tuple[str, int], int] = {}
        for name in wanted:
            for p in listed[name].partitions:
                low, high = probe.get_watermark_offsets(TopicPartition(name, p), timeout=timeout)
                if high > low:
                    ends[(name, p)] = high
        if not ends:
            return counts
        probe.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in ends])
        deadline = time.monotonic() + timeout
        while ends and time.monotonic() < deadline:
            for message in probe.consume(1000, 0.5):
                if message.error() is not None:
                    continue
                where = (message.topic() or "", message.partition() or 0)
                counts[where[0]] += 1
                if where in ends and (message.offset() or 0) + 1 >= ends[where]:
                    del ends[where]
            for where in list(ends):  # a partition ending in markers has no record left to read
                position = probe.position([TopicPartition(*where)])[0].offset
                if position >= ends[where]:
                    del ends[where]
        return counts
    finally:
        probe.close()
