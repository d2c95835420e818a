"""aiokafka helpers for tooling (topic creation, one-off publishing, reading a topic whole);
the services themselves use confluent-kafka (``runtime.ckafka``). Every producer is acks=all +
idempotent (aiokafka's own default is acks=1, which can lose an acknowledged record when a leader
dies), every consumer reads committed records and commits by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from casebridge.runtime.logging import get_logger
from casebridge.runtime.settings import Settings

T = TypeVar("T")
log = get_logger("casebridge.kafka")

PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "enable_idempotence": True,
    "linger_ms": 0,  # CaseBridge awaits each acknowledgement: waiting to batch only adds latency
    "request_timeout_ms": 30000,
}

CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable_auto_commit": False,
    "auto_offset_reset": "earliest",
    "isolation_level": "read_committed",
}


def new_producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    """A durable producer (acks=all, idempotent); start it with ``await producer.start()``."""
    config = {**PRODUCER_DEFAULTS, **settings.kafka_auth, **overrides}
    return AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, **config)


def new_consumer(
    settings: Settings, *topics: str, group_id: str | None, **overrides: Any
) -> AIOKafkaConsumer:
    """A consumer that commits only what it has handled (at-least-once)."""
    config = {**CONSUMER_DEFAULTS, **settings.kafka_auth, **overrides}
    return AIOKafkaConsumer(
        *topics, bootstrap_servers=settings.bootstrap_servers, group_id=group_id, **config
    )


async def ensure_topics(
    settings: Settings,
    names: Iterable[str],
    partitions: int = 3,
    replication: int = 1,
    config: Mapping[str, str] | None = None,
) -> list[str]:
    """Create the topics that do not exist yet; the names created (existing ones are left alone)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, **settings.kafka_auth)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in dict.fromkeys(names) if name not in existing]
        if missing:
            topics = [
                NewTopic(name, partitions, replication, topic_configs=dict(config or {})) for name in missing
            ]
            await admin.create_topics(topics)
        return missing
    finally:
        await admin.close()


async def publish_once(settings: Settings, topic: str, key: bytes, value: bytes) -> None:
    """Send one record durably and wait for the broker's acknowledgement."""
    producer = new_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()
