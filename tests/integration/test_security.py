"""A secured cluster (SASL/SCRAM-SHA-512, StandardAuthorizer, deny by default) and ACLs derived
from the directory, checked by real clients: every principal x every topic x read/write."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError

from casebridge.core import access
from casebridge.demo.scenario import wait_for as scenario_wait
from casebridge.localkafka import broker
from casebridge.runtime import acl, preflight
from casebridge.runtime.settings import Settings
from casebridge.runtime.topics import network_topics, sync_topics
from casebridge.runtime.world import World, bootstrap_network
from tests.support import launcher_broker

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
    source = launcher_broker(tmp_path_factory.mktemp("secbroker"), secure=True)
    handle = next(source)
    assert handle.spec is not None
    spec, bootstrap = handle.spec, handle.bootstrap
    try:
        home = tmp_path_factory.mktemp("sechome")
        world = bootstrap_network(home, datetime.now(UTC))
        admin = replace(handle.settings, home=home)
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
        for _ in source:  # stops the broker
            pass


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
        "cb.router.state": {access.ROUTER},
        "cb.deadlines.state": {access.DEADLINES},
    }
    writers = {
        "cb.audit": {access.ROUTER, access.DEADLINES},
        "cb.quarantine": {access.ROUTER},
        "cb.router.state": {access.ROUTER},
        "cb.deadlines.state": {access.DEADLINES},
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


def network_needs(secured: Secured, acting_as: str) -> dict[str, set[str]]:
    participants = list(secured.world.directory.participants)
    return preflight.needs(acting_as, [t.name for t in network_topics(participants)], participants)


def test_preflight_passes_for_each_principal_with_its_own_rights(secured: Secured) -> None:
    """Every service and node, logged in as itself, has every right the policy gives it."""
    for acting_as in ("KH.MOSVY", access.ROUTER, access.DEADLINES):
        wanted = network_needs(secured, acting_as)
        assert wanted  # something to check
        preflight.check(secured.as_user(acting_as), acting_as, wanted)
    assert network_needs(secured, "KH.MOSVY") == {
        "cb.in.KH.MOSVY": {"read", "describe"},
        "cb.out.KH.MOSVY": {"write", "describe"},
        "cb.directory": {"read", "describe"},
        "cb.agreements": {"read", "describe"},
    }


def test_preflight_names_the_missing_rights_and_the_failed_login(secured: Secured) -> None:
    """TH.MSDHS acting as KH.MOSVY lacks its inbox and outbox; a wrong password fails the login."""
    with pytest.raises(preflight.KafkaNotAuthorized) as refused:
        preflight.check(secured.as_user("TH.MSDHS"), "KH.MOSVY", network_needs(secured, "KH.MOSVY"))
    assert refused.value.code == "kafka_not_authorized"
    assert "read cb.in.KH.MOSVY" in refused.value.why and "write cb.out.KH.MOSVY" in refused.value.why
    assert "cb.directory" not in refused.value.why  # readable by all: not missing
    stolen = secured.as_user("KH.MOSVY", acl.password_of(secured.home, "TH.MSDHS"))
    with pytest.raises(preflight.KafkaAuthFailed) as login:
        preflight.check(stolen, "KH.MOSVY", network_needs(secured, "KH.MOSVY"))
    assert login.value.code == "kafka_auth_failed"


def test_a_node_started_without_its_rights_stops_at_once_with_a_clear_line(secured: Secured) -> None:
    """``casebridge node run --as KH.MOSVY`` logged in as TH.MSDHS exits quickly, saying why."""
    settings = secured.as_user("TH.MSDHS")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CASEBRIDGE_", "KAFKA_"))},
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "CASEBRIDGE_HOME": str(secured.home),
        "CASEBRIDGE_SASL_USERNAME": settings.sasl_username,
        "CASEBRIDGE_SASL_PASSWORD": settings.sasl_password,
    }
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "casebridge.cli", "node", "run", "--as", "KH.MOSVY", "--port", "0"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    took = time.monotonic() - started
    print(f"refused in {took:.1f}s: {done.stderr.strip()}")
    assert done.returncode != 0
    assert "kafka_not_authorized" in done.stderr and "read cb.in.KH.MOSVY" in done.stderr
    assert "Traceback" not in done.stderr
    assert settings.sasl_password not in done.stderr + done.stdout


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
