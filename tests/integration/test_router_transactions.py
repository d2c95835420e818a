"""The router's transactions on a real broker: a batch aborted after its produces is invisible to
read_committed consumers and is routed again, each event delivered exactly once; the router's
state survives a new worker (read back from ``cb.router.state``); poison records are quarantined
and nothing waits behind them."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from casebridge.core import avro, issued, sealing, topics
from casebridge.core.model import CaseState, Header
from casebridge.core.routing import Deliver, route
from casebridge.core.stream import Record
from casebridge.router.loop import Router
from casebridge.runtime import ckafka
from casebridge.runtime.settings import Settings
from casebridge.runtime.topics import network_topics, sync_topics
from casebridge.runtime.world import World, bootstrap_network
from tests.conftest import launcher_broker
from tests.unit.envelope_factories import example_payload

pytestmark = pytest.mark.kafka
PARTITIONS = 2
SENDER, RECIPIENT = "TH.MSDHS", "KH.MOSVY"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, World]]:
    """A broker of its own, trust material and the network's topics with two partitions."""
    source = launcher_broker(tmp_path_factory.mktemp("txnbroker"))
    try:
        handle = next(source)
    except Exception as exc:  # never skipped: say why and fail
        pytest.fail(f"no Kafka broker for the transaction tests: {exc}", pytrace=False)
    settings = replace(handle.settings, home=tmp_path_factory.mktemp("txnhome"), partitions=PARTITIONS)
    world = bootstrap_network(settings.home, datetime.now(UTC))
    asyncio.run(sync_topics(settings, network_topics(world.directory.participants, PARTITIONS)))
    yield settings, world
    for _ in source:
        pass


def envelopes(world: World, count: int) -> list[tuple[bytes, bytes]]:
    """``count`` return plans TH.MSDHS -> KH, chained per partition as a node chains them."""
    heads: dict[int, tuple[int, bytes]] = {}
    out = []
    now = datetime.now(UTC)
    for n in range(count):
        case_ref = f"CB-TXN-{uuid.uuid4().hex[:6]}-{n % 7}"
        p = topics.partition_for(case_ref.encode(), PARTITIONS)
        seq, prev = heads.get(p, (0, b""))
        header = Header(str(uuid.uuid4()), "return_plan.proposed", SENDER, "", now, case_ref, ("KH",),
                        sequence=seq + 1, prev_hash=prev)
        decision = route(header, world.policy, world.directory, CaseState(), now)
        assert isinstance(decision, Deliver)
        data = sealing.seal(header, example_payload(header.event_type), world.identity(SENDER),
                            decision.grants, world.directory, now, schemas=world.schemas)
        heads[p] = (seq + 1, sealing.envelope_hash(data))
        out.append((case_ref.encode(), data))
    return out


def publish(settings: Settings, records: Sequence[tuple[bytes, bytes]]) -> None:
    producer = ckafka.producer(settings)
    for key, value in records:
        producer.produce(topics.outbox(SENDER), value, key)
    assert producer.flush(30) == 0


def copies(
    settings: Settings, topic: str, isolation: str, wanted: set[bytes], wait: float = 3.0
) -> Counter[bytes]:
    """How many times each of ``wanted`` is on ``topic`` read with ``isolation``."""
    reader: Consumer = ckafka.consumer(settings, f"probe-{uuid.uuid4().hex[:6]}",
                                       **{"isolation.level": isolation})
    reader.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    seen: Counter[bytes] = Counter()
    deadline = time.monotonic() + wait
    try:
        while time.monotonic() < deadline:
            for m in reader.consume(500, 0.5):
                if m.error() is None and m.value() in wanted:
                    seen[m.value()] += 1
    finally:
        reader.close()
    return seen


class Running:
    """A router worker on a thread of the test process, stopped as a SIGTERM would stop it."""

    def __init__(self, router: Router) -> None:
        self.router, self.stop = router, threading.Event()
        self.thread = threading.Thread(target=router.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def end(self) -> None:
        self.stop.set()
        self.thread.join(10)


def wait_for(check: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.5)
    return False


def test_an_aborted_batch_is_invisible_to_read_committed_readers_and_routed_again(
    setup: tuple[Settings, World], tmp_path: Path
) -> None:
    """The first batch is aborted after its deliveries reached the broker: read_uncommitted sees
    them, read_committed never does; the batch is routed again and each event is on the
    recipient's inbox exactly once for read_committed readers."""
    settings, world = setup
    sent = envelopes(world, 20)
    values = {v for _, v in sent}
    inbox = topics.inbox(RECIPIENT)
    seen_in_abort: dict[str, int] = {}

    def before_commit(records: Sequence[Record]) -> bool:
        if seen_in_abort:
            return True
        seen_in_abort["uncommitted"] = sum(copies(settings, inbox, "read_uncommitted", values).values())
        seen_in_abort["committed"] = sum(copies(settings, inbox, "read_committed", values).values())
        seen_in_abort["batch"] = len(records)
        return False

    publish(settings, sent)
    router = Router(settings, world, group=f"txn-{uuid.uuid4().hex[:6]}", before_commit=before_commit)
    running = Running(router)
    try:
        assert wait_for(lambda: router.routed >= len(sent), 60), f"routed {router.routed} of {len(sent)}"
    finally:
        running.end()
    assert seen_in_abort["uncommitted"] >= 1 and seen_in_abort["committed"] == 0
    final = copies(settings, inbox, "read_committed", values, wait=5.0)
    assert set(final) == values and set(final.values()) == {1}


def test_a_new_worker_reads_the_state_back_and_drops_a_retransmission(setup: tuple[Settings, World]) -> None:
    """After a worker routed an event, a new worker of the group restores cb.router.state: the same
    bytes published again are a duplicate (not delivered twice), and the chain continues unflagged."""
    settings, world = setup
    group = f"txn-{uuid.uuid4().hex[:6]}"
    first = envelopes(world, 3)
    publish(settings, first)
    one = Router(settings, world, group=group)
    running = Running(one)
    assert wait_for(lambda: one.routed >= 3, 60)
    running.end()
    publish(settings, first[:1])  # a retried publish: the same bytes at a later offset
    two = Router(settings, world, group=group)
    running = Running(two)
    try:
        assert wait_for(lambda: two.routed >= 1, 60)
        assert sum(len(s["e"]) for s in dict(two.states).values()) >= 3  # read back from the changelog
    finally:
        running.end()
    final = copies(settings, topics.inbox(RECIPIENT), "read_committed", {first[0][1]}, wait=4.0)
    assert final[first[0][1]] == 1


def test_poison_records_are_quarantined_oversized_and_nothing_waits_behind_them(
    setup: tuple[Settings, World],
) -> None:
    """A 1,048,450-byte garbage record (its whole copy would pass Kafka's limit) and a valid
    envelope with a 400,000-character case reference (its delivery would) are quarantined
    ``oversized``, and the event after them is delivered: no record stops anyone else's."""
    settings, world = setup
    garbage = b"\xc3\x01" + bytes(1_048_448)
    huge_case = "C" * 400_000
    now = datetime.now(UTC)
    p = topics.partition_for(huge_case.encode(), PARTITIONS)
    header = Header(str(uuid.uuid4()), "return_plan.proposed", SENDER, "", now, huge_case, ("KH",),
                    sequence=1)
    decision = route(header, world.policy, world.directory, CaseState(), now)
    assert isinstance(decision, Deliver)
    huge = sealing.seal(header, example_payload(header.event_type), world.identity(SENDER), decision.grants,
                        world.directory, now, schemas=world.schemas, max_size=2 << 20)
    [after] = envelopes(world, 1)
    producer = ckafka.producer(settings, **{"message.max.bytes": 2 << 20})
    producer.produce(topics.outbox(SENDER), garbage, b"CB-POISON", partition=p)
    producer.produce(topics.outbox(SENDER), huge, huge_case.encode(), partition=p)
    producer.produce(topics.outbox(SENDER), after[1], after[0])
    assert producer.flush(30) == 0
    router = Router(settings, world, group=f"txn-{uuid.uuid4().hex[:6]}")
    running = Running(router)
    try:
        assert wait_for(lambda: bool(copies(settings, topics.inbox(RECIPIENT), "read_committed",
                                            {after[1]}, wait=1.0)), 60)
    finally:
        running.end()
    kept = quarantined(settings, world)
    assert kept.get(len(garbage)) == "oversized" and kept.get(len(huge)) == "oversized"


def quarantined(settings: Settings, world: World) -> dict[int, str]:
    """Original size -> code of every quarantine record now on cb.quarantine."""
    reader = ckafka.consumer(settings, f"probe-{uuid.uuid4().hex[:6]}")
    reader.assign([TopicPartition(topics.QUARANTINE, p, 0) for p in range(3)])
    found: dict[int, str] = {}
    deadline = time.monotonic() + 4
    try:
        while time.monotonic() < deadline:
            for m in reader.consume(500, 0.5):
                if m.error() is None:
                    record = avro.decode(world.schemas, m.value(), issued.QUARANTINED)
                    found[record["original_size"] or 0] = record["code"]
    finally:
        reader.close()
    return found
