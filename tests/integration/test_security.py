"""A secured cluster (SASL/SCRAM-SHA-512, StandardAuthorizer, deny by default) and ACLs derived
from the directory, checked by real clients: every principal x every topic x read/write."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError

from casebridge.core import access
from casebridge.runtime import acl, broker
from casebridge.runtime.scenario import wait_for as scenario_wait
from casebridge.runtime.settings import Settings
from casebridge.runtime.topics import network_topics, sync_topics
from casebridge.runtime.world import World, bootstrap_network

pytestmark = pytest.mark.kafka


@dataclass(frozen=True)
class Secured:
    spec: broker.BrokerSpec
    home: Path
    world: World
    admin: Settings

    def as_user(self, principal: str, password: str | None = None) -> Settings:
        secret = password if password is not None else acl.password_of(self.home, principal)
        return replace(self.admin, sasl_username=principal, sasl_password=secret)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """A secured broker of its own, the network's topics, users and ACLs."""
    settings = Settings.from_env()
    spec = broker.BrokerSpec(
        state_dir=tmp_path_factory.mktemp("secbroker"),
        cache_dir=settings.kafka_cache,
        pom=settings.kafka_pom,
        base_port=broker.free_base_port(),
        secure=True,
    )
    bootstrap = broker.start(spec, print)
    try:
        home = tmp_path_factory.mktemp("sechome")
        world = bootstrap_network(home, datetime.now(UTC))
        admin = Settings(
            bootstrap_servers=bootstrap,
            home=home,
            sasl_username=broker.ADMIN,
            sasl_password=broker.admin_password(spec),
        )
        participants = list(world.directory.participants)
        asyncio.run(sync_topics(admin, network_topics(participants)))
        acl.sync(
            bootstrap,
            broker.admin_password(spec),
            home,
            access.grants_for(participants),
            access.principals(participants),
        )
        secured = Secured(spec, home, world, admin)
        assert asyncio.run(authenticates(secured.as_user(access.MONITOR), deadline=30))
        yield secured
    finally:
        broker.stop(spec, print)


async def authenticates(settings: Settings, deadline: float) -> bool:
    """True once the user can log in (new SCRAM credentials take effect a moment after the upsert)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while loop.time() < end:
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, **settings.kafka_auth)
        try:
            await producer.start()
            return True
        except KafkaError:
            await asyncio.sleep(0.5)
        finally:
            await producer.stop()
    return False


def expected(principal: str, topic: str, op: str, participants: set[str]) -> bool:
    """The policy of issue 6 in plain words, written independently of core.access."""
    owner = topic.removeprefix("cb.out.").removeprefix("cb.in.")
    if topic.startswith("cb.out."):
        return (op == "write" and principal == owner) or (op == "read" and principal == access.ROUTER)
    if topic.startswith("cb.in."):
        writers = {access.ROUTER, access.DEADLINES}
        return (op == "read" and principal == owner) or (op == "write" and principal in writers)
    if topic in ("cb.directory", "cb.agreements"):
        return (op == "read" and principal in participants) or (
            op == "write" and principal == access.SECRETARIAT
        )
    readers = {
        "cb.audit": {access.DEADLINES, access.MONITOR},
        "cb.quarantine": set(),
        "cb.deadlines.tick": {access.DEADLINES},
    }
    writers = {
        "cb.audit": {access.ROUTER, access.DEADLINES},
        "cb.quarantine": {access.ROUTER},
        "cb.deadlines.tick": {access.DEADLINES},
    }
    return principal in (readers if op == "read" else writers)[topic]


async def can_write(producer: AIOKafkaProducer, topic: str) -> bool:
    try:
        await asyncio.wait_for(producer.send_and_wait(topic, b"authorization probe", key=b"probe"), 15)
    except TopicAuthorizationFailedError:
        return False
    except KafkaError as exc:
        raise AssertionError(f"{topic}: {exc!r}") from exc
    return True


async def can_read(settings: Settings, topics: list[str]) -> dict[str, bool]:
    """Readable = visible in metadata (DESCRIBE) and a fetch is not refused (READ)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=None,
        request_timeout_ms=10000,
        **settings.kafka_auth,
    )
    await consumer.start()
    try:
        visible = await consumer.topics()
        result = {}
        for topic in topics:
            result[topic] = topic in visible and await fetch_allowed(consumer, topic)
        return result
    finally:
        await consumer.stop()


async def fetch_allowed(consumer: AIOKafkaConsumer, topic: str) -> bool:
    consumer.assign([TopicPartition(topic, 0)])
    try:
        await consumer.seek_to_beginning()
        await consumer.getmany(timeout_ms=300)
    except TopicAuthorizationFailedError:
        return False
    return True


async def observed(secured: Secured, principal: str, topics: list[str]) -> dict[tuple[str, str], bool]:
    settings = secured.as_user(principal)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=10000,
        **settings.kafka_auth,
    )
    await producer.start()
    try:
        writes = {(t, "write"): await can_write(producer, t) for t in topics}
    finally:
        await producer.stop()
    reads = await can_read(settings, topics)
    return writes | {(t, "read"): ok for t, ok in reads.items()}


def test_the_authorization_matrix_has_no_unexpected_allow_or_denial(secured: Secured) -> None:
    """Every principal x every network topic x read/write behaves as the policy says."""
    participants = set(secured.world.directory.participants)
    topics = [spec.name for spec in network_topics(participants)]
    cells, wrong = 0, []
    for principal in access.principals(participants):
        try:
            seen = asyncio.run(observed(secured, principal, topics))
        except Exception as exc:
            raise AssertionError(f"probing as {principal}: {exc!r}") from exc
        for (topic, op), allowed in seen.items():
            cells += 1
            if allowed != expected(principal, topic, op, participants):
                wrong.append(f"{principal} {op} {topic}: {'allowed' if allowed else 'denied'}")
    allowed_cells = sum(
        expected(p, t, o, participants)
        for p in access.principals(participants)
        for t in topics
        for o in ("read", "write")
    )
    print(
        f"authorization matrix: {cells} cells checked, {allowed_cells} allowed by policy, "
        f"{len(wrong)} unexpected"
    )
    assert cells == len(access.principals(participants)) * len(topics) * 2
    assert wrong == []


def test_another_participants_password_does_not_authenticate(
    secured: Secured, caplog: pytest.LogCaptureFixture
) -> None:
    """KH.MOSVY's name with TH.MSDHS's password is refused at authentication, with a clear error."""
    stolen = secured.as_user("KH.MOSVY", acl.password_of(secured.home, "TH.MSDHS"))
    assert asyncio.run(authenticates(secured.as_user("KH.MOSVY"), deadline=30))
    with caplog.at_level(logging.ERROR, logger="aiokafka"):
        assert not asyncio.run(authenticates(stolen, deadline=3))
    assert "SaslAuthenticationFailed" in caplog.text and "invalid credentials" in caplog.text


def test_reading_another_inbox_is_refused_quickly(secured: Secured) -> None:
    """With its own password, KH.MOSVY cannot read TH.MSDHS's inbox: refused, not a hang."""
    reads = asyncio.run(
        asyncio.wait_for(can_read(secured.as_user("KH.MOSVY"), ["cb.in.TH.MSDHS", "cb.in.KH.MOSVY"]), 60)
    )
    assert reads == {"cb.in.TH.MSDHS": False, "cb.in.KH.MOSVY": True}


def test_a_participant_removed_from_the_directory_loses_its_access(secured: Secured) -> None:
    """Re-syncing without KH.CCPCR deletes its user and ACLs; it can no longer connect."""
    participants = [p for p in secured.world.directory.participants if p != "KH.CCPCR"]
    report = acl.sync(
        secured.admin.bootstrap_servers,
        secured.admin.sasl_password,
        secured.home,
        access.grants_for(participants),
        access.principals(participants),
    )
    assert report.users_deleted == 1 and report.deleted > 0
    gone = secured.as_user("KH.CCPCR")
    assert scenario_wait(lambda: not asyncio.run(authenticates(gone, deadline=1)), 30)
