"""Records the router's consumer skipped are read and routed before the record after them.

Seen in the fault tests: after the router was SIGKILLed and started again against a backlog,
faust-streaming 0.15.3 handed the agent an outbox record tens or hundreds of offsets past the last
one routed, without the ones between. They were neither handled nor acked, so the group's commit
stayed before them (the lasting gap in acked offsets of faust-streaming/faust#596), and the next
worker delivered them late: out of per-case order. A restart (the earlier skip guard) met the same
skip again under the same backlog; where in faust the records are dropped is not pinned down.

So the router keeps, in a changelog-backed table, the last offset it routed per outbox partition,
across restarts. Outboxes are neither compacted nor transactional: their offsets are contiguous,
and a record more than one past that mark means records were skipped. ``catch_up`` reads them with
a consumer of the router's own (no group, assigned the one partition), routes each in order, and
acks it in faust so that its commit can pass; then the record after the gap is routed. Routing a
record again is harmless (a redelivery: nodes store an event once); skipping one is not.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition
from faust.types import Message

from casebridge.core.errors import CaseBridgeError
from casebridge.runtime.kafka import new_consumer
from casebridge.runtime.logging import get_logger
from casebridge.runtime.settings import Settings

log = get_logger("casebridge.router")
PATIENCE = 60.0  # seconds without one record of the gap: the broker is away; let the supervisor retry


class GapUnreadable(CaseBridgeError):
    """Records the consumer skipped could not be read back in time."""

    code = "gap_unreadable"


@dataclass(frozen=True)
class Fetched:
    """A record read outside faust, shaped as the router's handler takes a faust event."""

    message: Message
    key: bytes | None
    value: bytes


def mark(topic: str, partition: int) -> str:
    """The table key of an outbox partition."""
    return f"{topic}/{partition}"


def gap(last: int | None, offset: int) -> range:
    """The offsets between the last one routed and ``offset`` (empty when contiguous or unknown)."""
    if last is None or offset <= last + 1:
        return range(0)
    return range(last + 1, offset)


def as_message(record: Any) -> Message:
    return Message(record.topic, record.partition, record.offset, record.timestamp / 1000.0,
                   record.timestamp_type, list(record.headers or []), record.key, record.value, None)


async def catch_up(
    settings: Settings,
    topic: str,
    partition: int,
    missing: range,
    route: Callable[[Fetched], Awaitable[None]],
    ack: Callable[[Message], Any],
) -> int:
    """Read ``missing`` of one partition, route and ack each record in order; how many were routed."""
    tp = TopicPartition(topic, partition)
    consumer = new_consumer(settings, group_id=None, )
    await consumer.start()
    routed, expected = 0, missing.start
    try:
        consumer.assign([tp])
        consumer.seek(tp, missing.start)
        quiet_since = time.monotonic()
        while expected < missing.stop:
            batch = await consumer.getmany(tp, timeout_ms=1000, max_records=500)
            records = [r for r in batch.get(tp, []) if expected <= r.offset < missing.stop]
            if not records:
                if time.monotonic() - quiet_since > PATIENCE:
                    raise GapUnreadable(
                        f"{topic}/{partition} offsets {expected}..{missing.stop - 1} could not be read "
                        f"in {PATIENCE:.0f} s",
                    )
                continue
            quiet_since = time.monotonic()
            for record in records:  # offsets below the log start (retention) come back from later
                message = as_message(record)
                await route(Fetched(message, record.key, record.value))
                ack(message)
                routed += 1
                expected = record.offset + 1
    finally:
        await consumer.stop()
    return routed
