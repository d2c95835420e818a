"""The secured broker over TLS (``broker start --secure --tls``): SASL_SSL with a local CA.

A broker of its own; clients trust only the CA the launcher made. Plain SASL to the same port
and a client trusting another CA are refused; the network runs end to end over TLS.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from casebridge.demo import localnet, scenario
from casebridge.localkafka import tls
from casebridge.runtime.kafka import ensure_topics, new_consumer, new_producer
from casebridge.runtime.settings import Settings
from tests.support import KafkaHandle, launcher_broker

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaHandle]:
    source = launcher_broker(tmp_path_factory.mktemp("tlsbroker"), secure=True, tls=True)
    try:
        handle = next(source)
    except Exception as exc:  # say why, and fail: never skip
        pytest.fail(f"no TLS broker could be started: {exc}", pytrace=False)
    yield handle
    for _ in source:
        pass


async def roundtrip(settings: Settings, topic: str) -> bytes:
    await ensure_topics(settings, [topic], 1, 1)
    producer = new_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"over tls", key=b"k")
    finally:
        await producer.stop()
    consumer = new_consumer(settings, topic, group_id=None)
    await consumer.start()
    try:
        async with asyncio.timeout(30):
            record = await consumer.getone()
        return bytes(record.value or b"")
    finally:
        await consumer.stop()


def test_clients_trusting_the_local_ca_speak_sasl_ssl(tls_broker: KafkaHandle) -> None:
    settings = tls_broker.settings
    assert settings.security_protocol == "SASL_SSL"
    assert asyncio.run(roundtrip(settings, "tls.check")) == b"over tls"


async def connects(**config: object) -> bool:
    producer = AIOKafkaProducer(request_timeout_ms=5000, **config)  # type: ignore[arg-type]
    try:
        async with asyncio.timeout(20):
            await producer.start()
    except Exception:  # refused: the expected outcome
        return False
    finally:
        await producer.stop()
    return True


def test_plain_sasl_to_the_tls_port_is_refused(tls_broker: KafkaHandle) -> None:
    settings = tls_broker.settings
    auth = {**settings.kafka_auth, "security_protocol": "SASL_PLAINTEXT"}
    auth.pop("ssl_context")
    assert asyncio.run(connects(bootstrap_servers=settings.bootstrap_servers, **auth)) is False
    assert asyncio.run(connects(bootstrap_servers=settings.bootstrap_servers, **settings.kafka_auth)) is True


def test_a_client_trusting_another_ca_is_refused(tls_broker: KafkaHandle, tmp_path: Path) -> None:
    other = tls.ensure_local_ca(tmp_path).ca_cert
    settings = replace(tls_broker.settings, kafka_ca=str(other))
    assert asyncio.run(connects(bootstrap_servers=settings.bootstrap_servers, **settings.kafka_auth)) is False


def test_the_network_runs_end_to_end_over_tls(tls_broker: KafkaHandle, tmp_path: Path) -> None:
    """Router, tracker, monitor and two nodes, each logged in as itself over TLS: an event is
    delivered and stored."""
    net = localnet.start(replace(tls_broker.settings, home=tmp_path), ("TH.MSDHS", "KH.MOSVY"))
    try:
        case = f"CB-TLS-{uuid.uuid4().hex[:6]}"
        status, body = net.call("TH.MSDHS", "POST", "/events", scenario.return_plan(case, 0))
        assert status == 202, body
        assert scenario.wait_for(
            lambda: any(e["event_id"] == body["event_id"] for e in scenario.inbox(net, "KH.MOSVY")), 90
        )
    finally:
        net.stop()
