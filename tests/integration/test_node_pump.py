"""The node's Kafka side (``casebridge.node.pump``) against the session's real broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from casebridge.core import sealing
from casebridge.core.jsonform import to_json
from casebridge.demo import localnet
from casebridge.node import pump, service, store
from casebridge.node.app import Node, node_db
from casebridge.runtime import ckafka
from casebridge.runtime.kafka import ensure_topics
from casebridge.runtime.settings import Settings
from casebridge.runtime.world import World, bootstrap_network
from tests.conftest import KafkaHandle
from tests.support import fresh_name
from tests.unit.envelope_factories import example_payload

pytestmark = pytest.mark.kafka

SENDER, RECIPIENT = "TH.MSDHS", "KH.MOSVY"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return bootstrap_network(tmp_path_factory.mktemp("network"), datetime.now(UTC) - timedelta(hours=1))


def settings_for(kafka: KafkaHandle, home: Path) -> Settings:
    return Settings(**{**kafka.settings.__dict__, "home": home})


def event(case_ref: str, **more: Any) -> dict[str, Any]:
    return {"event_type": "return_plan.proposed", "case_ref": case_ref, "to": ["KH"],
            "payload": to_json(example_payload("return_plan.proposed")), **more}


def read_all(settings: Settings, topic: str, count: int, timeout: float = 60.0) -> list[Any]:
    reader = ckafka.consumer(settings, fresh_name("group"))
    reader.subscribe([topic])
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < count and time.monotonic() < deadline:
            got += [m for m in reader.consume(500, 0.5) if m.error() is None]
    finally:
        reader.close()
    return got


def publish_until_done(pub: pump.Publisher, conn: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while (store.queued(conn) or pub.in_flight) and time.monotonic() < deadline:
        pump.hand_over(pub, conn)
        pub.producer.poll(0.1)
        pump.settle(pub, conn, datetime.now(UTC))
        pump.restart_after_failure(pub)


def test_the_publisher_sends_each_chain_to_its_partition_in_order(
    kafka: KafkaHandle, world: World, tmp_path: Path
) -> None:
    """Events of many cases land in the murmur2 partition of their case reference (the one their
    chain was built for), keyed by it, and in sequence order within each partition."""
    topic = fresh_name("outbox")
    asyncio.run(ensure_topics(kafka.settings, [topic], partitions=6))
    conn = store.connect(tmp_path / "node.sqlite", 6)
    me = world.identity(SENDER)
    results = service.submit_many(world, me, conn, [event(f"case-{n % 9}") for n in range(60)],
                                  datetime.now(UTC))
    assert all(isinstance(r, service.Submitted) and r.status == "queued" for r in results)
    pub = pump.Publisher(topic, ckafka.producer(kafka.settings, **pump.PUBLISHER_CONFIG))
    publish_until_done(pub, conn)
    assert store.queued(conn) == []
    records = read_all(kafka.settings, topic, 60)
    assert len(records) == 60
    ctx = world.context(datetime.now(UTC))
    last: dict[int, int] = {}
    for record in records:
        header = sealing.verify(record.value(), ctx.directory, datetime.now(UTC), ctx.max_age,
                                schemas=world.schemas).header
        assert record.key() == header.case_ref.encode()
        assert record.partition() == service.partition_of(header.case_ref, 6)
        assert header.sequence == last.get(record.partition(), 0) + 1
        last[record.partition()] = header.sequence


def test_a_record_the_broker_refuses_for_its_size_leaves_the_queue(
    kafka: KafkaHandle, world: World, tmp_path: Path
) -> None:
    """On a topic that takes records of at most 4 kB, an envelope above it is rejected as
    oversized after it was sent alone; the events before and after it are published."""
    topic = fresh_name("outbox")
    asyncio.run(ensure_topics(kafka.settings, [topic], partitions=1, config={"max.message.bytes": "4096"}))
    conn = store.connect(tmp_path / "node.sqlite", 1)
    me = world.identity(SENDER)
    big = event("case-big")
    big["payload"]["operational"]["note"] = "x" * 6000
    docs = [event("case-a"), big, event("case-b")]
    results = service.submit_many(world, me, conn, docs, datetime.now(UTC))
    ids = [r.event_id for r in results if isinstance(r, service.Submitted)]
    assert [r.status for r in results if isinstance(r, service.Submitted)] == ["queued"] * 3, results
    pub = pump.Publisher(topic, ckafka.producer(kafka.settings, **pump.PUBLISHER_CONFIG))
    publish_until_done(pub, conn)
    statuses = [(row.status, row.reason) for row in map(lambda e: store.outbox_row(conn, e), ids) if row]
    assert statuses == [("published", None), ("rejected", "oversized"), ("published", None)]
    assert len(read_all(kafka.settings, topic, 2)) == 2


def test_the_inbox_stores_each_event_once_and_commits_after_storing(
    kafka: KafkaHandle, world: World, tmp_path: Path
) -> None:
    """Envelopes on the inbox topic (one of them twice) are stored once each, one receipt each is
    queued, and the group's committed offsets reach the end of the topic."""
    topic, group = fresh_name("inbox"), fresh_name("group")
    asyncio.run(ensure_topics(kafka.settings, [topic], partitions=3))
    sender = store.connect(tmp_path / "sender.sqlite")
    results = service.submit_many(world, world.identity(SENDER), sender,
                                  [event(f"case-{n}") for n in range(20)], datetime.now(UTC))
    envelopes = [store.outbox_row(sender, r.event_id).envelope for r in results  # type: ignore[union-attr]
                 if isinstance(r, service.Submitted)]
    producer = ckafka.producer(kafka.settings)
    for n, envelope in enumerate([*envelopes, envelopes[0]]):
        producer.produce(topic, envelope, key=f"case-{n % 20}".encode())
    assert producer.flush(30) == 0
    settings = settings_for(kafka, tmp_path / "home")
    node = Node(settings, world, world.identity(RECIPIENT),
                store.connect(node_db(settings.home, RECIPIENT), settings.partitions))
    stop = threading.Event()
    thread = threading.Thread(target=pump.receive_forever, args=(node, settings, stop, topic, group))
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while committed(kafka.settings, topic, group) < 21 and time.monotonic() < deadline:
            time.sleep(0.3)
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert committed(kafka.settings, topic, group) == 21
    assert len(store.inbox_page(node.conn, "", 500)) == 20
    assert [r.event_type for r in store.queued(node.conn, 500)] == ["receipt.delivered"] * 20


def test_a_batch_the_store_failed_on_is_read_again_and_stored_once(
    world: World, kafka: KafkaHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SQLite error while storing a batch (SQLITE_PROTOCOL was seen after a restart) does not end
    the inbox loop: nothing is committed, the batch is read again and stored once."""
    topic, group = fresh_name("inbox"), fresh_name("group")
    asyncio.run(ensure_topics(kafka.settings, [topic], partitions=1))
    sender = store.connect(tmp_path / "sender.sqlite")
    results = service.submit_many(world, world.identity(SENDER), sender,
                                  [event(f"case-{n}") for n in range(5)], datetime.now(UTC))
    producer = ckafka.producer(kafka.settings)
    for r in results:
        assert isinstance(r, service.Submitted)
        row = store.outbox_row(sender, r.event_id)
        assert row is not None and row.envelope is not None
        producer.produce(topic, row.envelope, key=row.case_ref.encode())
    assert producer.flush(30) == 0
    real, failures = service.receive_many, []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if not failures:
            failures.append(1)
            raise sqlite3.OperationalError("locking protocol")
        return real(*args, **kwargs)

    monkeypatch.setattr(service, "receive_many", flaky)
    settings = settings_for(kafka, tmp_path / "home")
    node = Node(settings, world, world.identity(RECIPIENT),
                store.connect(node_db(settings.home, RECIPIENT), settings.partitions))
    stop = threading.Event()
    thread = threading.Thread(target=pump.receive_forever, args=(node, settings, stop, topic, group))
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while committed(kafka.settings, topic, group) < 5 and time.monotonic() < deadline:
            time.sleep(0.3)
    finally:
        stop.set()
        thread.join(10)
    assert failures == [1] and not thread.is_alive()
    assert committed(kafka.settings, topic, group) == 5
    assert len(store.inbox_page(node.conn, "", 500)) == 5


def committed(settings: Settings, topic: str, group: str) -> int:
    """The sum over the topic's partitions of the group's committed offsets."""
    probe = ckafka.consumer(settings, group)
    try:
        offsets = probe.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
    finally:
        probe.close()
    return sum(max(tp.offset, 0) for tp in offsets)


NODE_SCRIPT = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from casebridge.node import pump
from casebridge.runtime.settings import Settings
from casebridge.runtime.world import load_world
home, bootstrap, port = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
settings = Settings(bootstrap_servers=bootstrap, home=home)
raise SystemExit(pump.run(settings, load_world(home, datetime.now(UTC)), "TH.MSDHS", port))
"""


def call(port: int, method: str, path: str, body: Any = None, token: str = "") -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                     headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        return response.status, json.loads(response.read())


def test_a_node_without_a_broker_queues_events_and_stops_within_5_s_of_sigterm(world: World) -> None:
    """With its broker unreachable the node still accepts events (queued durably) and, on
    SIGTERM, exits 0 within 5 s; the event is still queued for the next run."""
    home = world.trust_dir.parent
    token = localnet.add_api_client(home, SENDER)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead, port = sock.getsockname()[1], free_port()
    process = subprocess.Popen([sys.executable, "-c", NODE_SCRIPT, str(home), f"127.0.0.1:{dead}", str(port)])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if call(port, "GET", "/health")[0] == 200:
                    break
            time.sleep(0.2)
        status, body = call(port, "POST", "/events", event("case-offline"), token)
        assert (status, body["status"]) == (202, "queued")
        time.sleep(1.0)  # the publisher is trying to reach the broker
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        assert time.monotonic() - started < 5.0
    finally:
        if process.poll() is None:
            process.kill()
    conn = store.connect(node_db(home, SENDER))
    assert store.outbox_row(conn, body["event_id"]).status == "queued"  # type: ignore[union-attr]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
