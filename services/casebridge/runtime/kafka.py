"""Kafka client factories: every producer is acks=all + idempotent; every consumer commits by hand.

aiokafka's own default is acks=1, which can lose an acknowledged record when a leader dies: the
factories here are the only place clients are made, so that default never leaks in.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

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


def create_app(settings: Settings, app_id: str, **conf: Any) -> faust.App:
    """A faust app at-least-once (never ``exactly_once``: open faust bugs), agents added by the caller.

    Tables live in memory and are rebuilt from their changelog topics on start.
    """
    datadir = settings.home / "faust" / f"{app_id}-data"
    datadir.parent.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {
        "broker": f"kafka://{settings.bootstrap_servers}",
        "store": "memory://",
        "processing_guarantee": "at_least_once",
        "producer_acks": -1,
        "topic_allow_declare": True,
        "topic_disable_leader": True,
        "web_enabled": False,
        "autodiscover": False,
        "broker_commit_every": 100,
        "broker_commit_interval": 1.0,
        "consumer_auto_offset_reset": "earliest",
        "datadir": str(datadir),  # under the home, not the working directory
        "topic_replication_factor": settings.replication,  # changelogs survive a broker's loss
        # a worker that died without leaving (SIGKILL) holds its partitions until its session
        # expires: 15 s instead of faust's 60 s bounds that pause (heartbeats every 3 s)
        "broker_session_timeout": 15.0,
        "broker_heartbeat_interval": 3.0,
    }
    if settings.instance_id:  # static membership (KIP-345): a worker restarted under the same id
        # gets its partitions back without a rebalance; one that does not return loses them after
        # the session timeout. Each worker of a group needs its own id.
        options["consumer_group_instance_id"] = settings.instance_id
    if settings.sasl_username:
        options["broker_credentials"] = faust.SASLCredentials(
            username=settings.sasl_username, password=settings.sasl_password, mechanism="SCRAM-SHA-512",
            ssl_context=settings.ssl_context(),  # with a context faust speaks SASL_SSL
        )
    options.update(conf)
    return faust.App(app_id, **options)


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


def raw_topic(app: faust.App, *names: str) -> Any:
    """A faust topic of raw bytes: CaseBridge decodes (and verifies) every record itself."""
    return app.topic(*names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


class LazyProducer:
    """One durable producer per faust app, started on first use and stopped with the app."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.settings = settings
        self.producer: AIOKafkaProducer | None = None
        app.on_before_shutdown.connect(self._stop)  # type: ignore[arg-type]  # mode types the receiver too narrowly

    async def get(self) -> AIOKafkaProducer:
        if self.producer is None:
            producer = new_producer(self.settings)
            await producer.start()
            self.producer = producer
        return self.producer

    async def reset(self) -> None:
        """Drop the producer after an error; the next ``get`` makes a new one. An idempotent
        producer can be left unusable for good (OutOfOrderSequenceNumber after every broker of
        the cluster restarted): only a new producer, with a new producer id, gets out of it."""
        producer, self.producer = self.producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), timeout=10)

    async def _stop(self, app: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None


async def retrying(lazy: LazyProducer, what: str, action: Callable[[], Awaitable[T]]) -> T:
    """Run ``action`` until the brokers accept it: a Kafka error is the brokers' (away, electing a
    leader, a producer left unusable), not the record's, so make a new producer, wait, try again."""
    backoff = 0.5
    while True:
        try:
            return await action()
        except KafkaError as exc:
            log.warning("kafka_retry", what=what, error=type(exc).__name__, backoff=backoff)
            await lazy.reset()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)


async def publish_once(settings: Settings, topic: str, key: bytes, value: bytes) -> None:
    """Send one record durably and wait for the broker's acknowledgement."""
    producer = new_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()
