"""Smoke tests on the real broker: the aiokafka client factories the tooling uses."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from casebridge.runtime.kafka import ensure_topics, new_consumer, new_producer
from tests.support import KafkaHandle, fresh_name

pytestmark = pytest.mark.kafka


async def consume(handle: KafkaHandle, topic: str, count: int, timeout: float = 60.0) -> list[Any]:
    """The first ``count`` records of ``topic`` as (key, value, headers), within ``timeout``."""
    consumer = new_consumer(handle.settings, topic, group_id=fresh_name("group"))
    await consumer.start()
    got: list[Any] = []
    try:
        async with asyncio.timeout(timeout):
            while len(got) < count:
                batch = await consumer.getmany(timeout_ms=500)
                got += [(m.key, m.value, list(m.headers)) for records in batch.values() for m in records]
    finally:
        await consumer.stop()
    return got


async def test_produce_consume_roundtrip_with_acks_all_and_idempotence(kafka: KafkaHandle) -> None:
    """A record sent by the durable producer comes back byte-for-byte with its key and headers."""
    topic = fresh_name("roundtrip")
    await ensure_topics(kafka.settings, [topic])  # a secured broker creates no topic by itself
    producer = new_producer(kafka.settings)
    await producer.start()
    try:
        sent = await producer.send_and_wait(
            topic, b"\xc3\x01payload", key=b"case-1", headers=[("ce_type", b"smoke")]
        )
    finally:
        await producer.stop()
    assert sent.offset == 0
    assert await consume(kafka, topic, 1) == [(b"case-1", b"\xc3\x01payload", [("ce_type", b"smoke")])]


async def test_producer_defaults_are_durable(kafka: KafkaHandle) -> None:
    """The factory's producer waits for all in-sync replicas and is idempotent (aiokafka: acks=1)."""
    producer = new_producer(kafka.settings)
    await producer.start()
    try:
        # aiokafka keeps these private; they are what the broker sees (acks -1 = all)
        assert producer._sender._acks == -1
        assert producer._txn_manager is not None, "idempotence must be on"
        assert producer._txn_manager.producer_id >= 0, "the broker must have assigned a producer id"
    finally:
        await producer.stop()
