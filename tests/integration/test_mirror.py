"""MirrorMaker 2 run by the receiving country (KH) pulls the corridor ``cb.xb.TH.KH`` from TH's
secured cluster into its own: committed records only, as written, nothing written into TH, and
with exactly-once support no record lost or doubled by a SIGKILL mid-stream."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition
from confluent_kafka.admin import (
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from casebridge.core import federation as topology
from casebridge.core.access import Grant
from casebridge.core.topics import XB_PREFIX
from casebridge.localkafka import broker, mirror
from casebridge.runtime import acl, ckafka
from tests.support import KafkaHandle, launcher_broker

pytestmark = pytest.mark.kafka

MIRROR = "KH.MIRROR"  # KH's MirrorMaker 2 principal, a SCRAM user on both clusters
CORRIDOR = f"{XB_PREFIX}TH.KH"
PARTITIONS = 3
Row = tuple[int, bytes, bytes, tuple[tuple[str, bytes], ...]]  # partition, key, value, headers


def source_grants() -> list[Grant]:
    """On TH: read the corridor, and its settings (MM2 copies them onto the topic it creates)."""
    return [Grant(MIRROR, "topic", CORRIDOR, "literal", op)
            for op in ("read", "describe", "describe_configs")]


def own_grants() -> list[Grant]:
    """On KH: create and write the corridor; the herder's group, internal topics and transactions."""
    leader, tasks = topology.transactional_ids("TH")
    grants = [Grant(MIRROR, "topic", CORRIDOR, "literal", op) for op in ("create", "write", "describe")]
    grants += [Grant(MIRROR, "topic", name, "literal", op) for name in topology.internal_topics("TH")
               for op in ("create", "read", "write", "describe")]
    grants += [Grant(MIRROR, "group", topology.worker_group("TH"), "literal", "read")]
    grants += [Grant(MIRROR, "transactional_id", leader, "literal", op) for op in ("write", "describe")]
    grants += [Grant(MIRROR, "transactional_id", tasks, "prefixed", op) for op in ("write", "describe")]
    return grants


@dataclass(frozen=True)
class Federation:
    th: KafkaHandle
    kh: KafkaHandle
    spec: mirror.MirrorSpec
    th_topics: frozenset[str]  # TH's topics before MM2 ran


def admin_of(handle: KafkaHandle) -> AdminClient:
    assert handle.spec is not None
    return acl.admin_client(handle.bootstrap, broker.admin_password(handle.spec))


def topics_of(handle: KafkaHandle) -> frozenset[str]:
    return frozenset(admin_of(handle).list_topics(timeout=10).topics)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """TH and KH, secured, with MM2's users and ACLs, the corridor on TH and KH's MM2 replicating."""
    root = tmp_path_factory.mktemp("federation")
    sources = [launcher_broker(root / "th", secure=True), launcher_broker(root / "kh", secure=True)]
    try:
        th, kh = (next(source) for source in sources)
    except Exception as exc:  # fail, never skip: the federation needs real brokers
        pytest.fail(f"no Kafka brokers for the mirror test: {exc}", pytrace=False)
    assert th.spec is not None and kh.spec is not None
    spec = mirror_spec(root, th, kh)
    try:
        for handle, grants in ((th, source_grants()), (kh, own_grants())):
            assert handle.spec is not None
            acl.sync(handle.bootstrap, broker.admin_password(handle.spec), root / "home", grants, [MIRROR])
        admin = admin_of(th)  # kept: a collected client abandons its futures
        for future in admin.create_topics([NewTopic(CORRIDOR, PARTITIONS, 1)]).values():
            future.result(timeout=30)
        write(th, [rows("warm-up", 0, 1)])  # TH's own transactions make __transaction_state
        before = topics_of(th)
        mirror.start(spec, lambda msg: None)
        mirror.ready(spec, timeout=60)
        yield Federation(th, kh, spec, before)
    finally:
        mirror.stop(spec, lambda msg: None)
        for source in sources:
            for _ in source:
                pass


def mirror_spec(root: Path, th: KafkaHandle, kh: KafkaHandle) -> mirror.MirrorSpec:
    assert kh.spec is not None
    password = acl.password_of(root / "home", MIRROR)
    source = mirror.Source("TH", th.bootstrap, (CORRIDOR,), MIRROR, password)
    return mirror.MirrorSpec(own="KH", bootstrap=kh.bootstrap, sources=(source,), state_dir=root / "mm2",
                             cache_dir=kh.spec.cache_dir, pom=kh.spec.pom, username=MIRROR, password=password)


def rows(run: str, start: int, count: int) -> list[Row]:
    return [(n % PARTITIONS, f"case-{n}".encode(), f"{run}:{n}".encode(),
             (("run", run.encode()), ("n", str(n).encode()))) for n in range(start, start + count)]


def write(th: KafkaHandle, batches: list[list[Row]], abort: frozenset[int] = frozenset(),
          pause: float = 0.0) -> None:
    """Each batch in a transaction of TH's corridor writer (``pause`` seconds apart, so that a
    kill lands while records flow); the batches numbered in ``abort`` abort."""
    producer = ckafka.transactional_producer(th.settings, f"corridor-TH-{uuid.uuid4().hex[:8]}")
    producer.init_transactions(30)
    for number, batch in enumerate(batches):
        producer.begin_transaction()
        for partition, key, value, headers in batch:
            producer.produce(CORRIDOR, value, key, partition=partition, headers=list(headers))
        if number in abort:
            producer.abort_transaction(30)
        else:
            producer.commit_transaction(30)
        time.sleep(pause)


def read(federation: Federation, run: str, want: int, timeout: float = 60.0,
         isolation: str = "read_committed") -> list[Row]:
    """KH's committed corridor records of ``run`` once ``want`` arrived and every partition is read."""
    group = f"test.mirror.{uuid.uuid4().hex[:8]}"
    reader = ckafka.consumer(federation.kh.settings, group, **{"enable.partition.eof": True,
                                                               "isolation.level": isolation})
    reader.assign([TopicPartition(CORRIDOR, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    found: list[Row] = []
    at_end: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        while (len(found) < want or len(at_end) < PARTITIONS) and time.monotonic() < deadline:
            message = reader.poll(0.5)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(message.partition())
                continue
            at_end.discard(message.partition())
            headers = tuple((k, v or b"") for k, v in message.headers() or [])
            if dict(headers).get("run") == run.encode():
                found.append((message.partition(), message.key(), message.value(), headers))
    finally:
        reader.close()
    log = mirror.log_tail(federation.spec)
    assert len(found) >= want, f"{len(found)} of {want} records mirrored; MM2's log:\n{log}"
    return found


def by_partition(found: list[Row]) -> dict[int, list[Row]]:
    return {p: [r for r in found if r[0] == p] for p in range(PARTITIONS)}


def test_committed_records_arrive_as_written_and_aborted_ones_never(federation: Federation) -> None:
    """KH holds exactly TH's committed corridor records (keys, values, headers, partitions, order)."""
    run = uuid.uuid4().hex
    committed, aborted, later = rows(run, 0, 12), rows(run, 100, 6), rows(run, 12, 6)
    write(federation.th, [committed, aborted, later], abort=frozenset({1}))
    found = read(federation, run, want=len(committed) + len(later))
    assert by_partition(found) == by_partition(committed + later)
    assert not {key for _, key, _, _ in aborted} & {key for _, key, _, _ in found}


def test_nothing_is_written_into_the_source_cluster(federation: Federation) -> None:
    """After MM2 ran, TH has no new topic and no consumer group, and MM2's principal holds only
    read, describe and describe-configs on the corridor there."""
    write(federation.th, [rows(uuid.uuid4().hex, 0, 3)])
    assert topics_of(federation.th) == federation.th_topics
    admin = admin_of(federation.th)
    assert admin.list_consumer_groups().result(timeout=30).valid == []
    mine = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, f"User:{MIRROR}", None,
                            AclOperation.ANY, AclPermissionType.ANY)
    held = {(b.restype, b.name, b.operation) for b in admin.describe_acls(mine).result(timeout=30)}
    assert held == {(ResourceType.TOPIC, CORRIDOR, op) for op in
                    (AclOperation.READ, AclOperation.DESCRIBE, AclOperation.DESCRIBE_CONFIGS)}


def test_a_killed_mirror_restarted_loses_and_doubles_nothing(federation: Federation) -> None:
    """MM2 SIGKILLed while TH writes, then started again: every committed record once on KH."""
    run = uuid.uuid4().hex
    batches = [rows(run, 20 * n, 20) for n in range(40)]
    writer = threading.Thread(target=write, args=(federation.th, batches, frozenset(), 0.05), daemon=True)
    writer.start()
    read(federation, run, want=100)  # mid-stream: the writer is still writing
    mirror.kill(federation.spec)
    mirror.start(federation.spec, lambda msg: None)
    mirror.ready(federation.spec, timeout=60)
    writer.join(60)
    found = read(federation, run, want=20 * 40)
    doubled = sum(n - 1 for n in Counter(found).values())
    raw = read(federation, run, want=20 * 40, isolation="read_uncommitted")  # + the fenced transaction
    print(f"mirror restart: {len(found)} committed records of {20 * 40}, {doubled} duplicates; "
          f"{len(raw) - len(found)} more records in aborted MM2 transactions")
    assert {r[1] for r in found} == {r[1] for batch in batches for r in batch}
    assert doubled == 0

