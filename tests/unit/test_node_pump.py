"""The node's publisher rounds (``casebridge.node.pump``) over a real store, driven by a scripted
producer that reports what a test says (the real broker is in tests/integration/test_node_pump.py)."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from casebridge.node import pump, store
from casebridge.node.groupcommit import GroupCommit
from casebridge.node.service import Submitted
from casebridge.runtime import ckafka

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
TOPIC = "cb.out.TH.MSDHS"
TOO_LARGE = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
BROKER_DOWN = KafkaError(KafkaError._TRANSPORT)


@dataclass
class ScriptedProducer:
    """Takes records like confluent's Producer; ``poll`` reports each with ``verdict(event_id)``."""

    verdict: Callable[[str, int], KafkaError | None] = lambda event_id, attempt: None
    refuse: set[str] = field(default_factory=set)  # refused at produce() for their size
    sent: list[tuple[str, int, bytes]] = field(default_factory=list)  # event id, partition, key
    waiting: list[tuple[str, Any]] = field(default_factory=list)

    def produce(self, topic: str, value: bytes, key: bytes, partition: int, on_delivery: Any) -> None:
        event_id = value.decode()
        if event_id in self.refuse:
            raise KafkaException(TOO_LARGE)
        assert topic == TOPIC
        self.sent.append((event_id, partition, key))
        self.waiting.append((event_id, on_delivery))

    def poll(self, timeout: float) -> int:
        waiting, self.waiting = self.waiting, []
        for event_id, on_delivery in waiting:
            attempt = sum(1 for sent, _, _ in self.sent if sent == event_id)
            on_delivery(self.verdict(event_id, attempt), None)
        return len(waiting)


def open_store(tmp_path: Path) -> sqlite3.Connection:
    return store.connect(tmp_path / "node.sqlite")


def queue(conn: sqlite3.Connection, *rows: tuple[str, int]) -> None:
    """Queue envelopes (their bytes are their event id) as (event id, partition), in this order."""
    heads: dict[int, int] = {}
    with store.transaction(conn):
        for event_id, partition in rows:
            sequence = store.chain_head(conn, partition)[0] + 1
            heads[partition] = sequence
            row = store.OutboxRow(event_id, sequence, f"case-{event_id}", "referral.sent", ("KH.MOSVY",),
                                  event_id.encode(), "queued", None, partition)
            store.append_outbox(conn, row, event_id.encode(), NOW)


def cycle(pub: pump.Publisher, conn: sqlite3.Connection) -> tuple[int, KafkaError | None]:
    """One turn of the publisher loop: hand over, take the reports, record them."""
    handed = pump.hand_over(pub, conn)
    pub.producer.poll(0)
    pump.settle(pub, conn, NOW)
    return handed, pump.restart_after_failure(pub)


def status(conn: sqlite3.Connection, event_id: str) -> tuple[str, str | None]:
    row = store.outbox_row(conn, event_id)
    assert row is not None
    return row.status, row.reason


def test_a_round_hands_over_every_queued_row_in_order_to_its_partition(tmp_path: Path) -> None:
    """All queued rows go in one round, in queue order, each to its chain's partition and keyed by
    its case reference; the acknowledged ones are marked published together."""
    conn = open_store(tmp_path)
    queue(conn, ("a1", 0), ("b1", 3), ("a2", 0), ("b2", 3), ("c1", 5))
    producer = ScriptedProducer()
    pub = pump.Publisher(TOPIC, producer)
    assert cycle(pub, conn) == (5, None)
    assert producer.sent == [(e, p, f"case-{e}".encode()) for e, p in
                             [("a1", 0), ("b1", 3), ("a2", 0), ("b2", 3), ("c1", 5)]]
    assert store.queued(conn) == [] and not pub.in_flight
    assert cycle(pub, conn) == (0, None)  # nothing is sent twice


def test_rows_in_flight_are_not_handed_over_again(tmp_path: Path) -> None:
    """While rows wait for their reports, the next round sends only rows queued since."""
    conn = open_store(tmp_path)
    queue(conn, ("a1", 0), ("a2", 0))
    producer = ScriptedProducer()
    pub = pump.Publisher(TOPIC, producer)
    assert pump.hand_over(pub, conn) == 2
    queue(conn, ("a3", 0))
    assert pump.hand_over(pub, conn) == 1
    producer.poll(0)
    pump.settle(pub, conn, NOW)
    assert [e for e, _, _ in producer.sent] == ["a1", "a2", "a3"]
    assert store.queued(conn) == []


def test_a_failed_row_stays_queued_and_is_sent_again_in_order(tmp_path: Path) -> None:
    """A send that fails keeps its row queued; nothing new is handed over until every row in
    flight has reported, then sending starts again from the oldest queued row."""
    conn = open_store(tmp_path)
    queue(conn, ("a1", 0), ("a2", 0), ("a3", 0))
    producer = ScriptedProducer(lambda e, attempt: BROKER_DOWN if attempt == 1 and e != "a1" else None)
    pub = pump.Publisher(TOPIC, producer)
    handed, failure = cycle(pub, conn)
    assert handed == 3 and failure is not None and failure.code() == KafkaError._TRANSPORT
    assert status(conn, "a1") == ("published", None)
    assert [r.event_id for r in store.queued(conn)] == ["a2", "a3"]
    assert cycle(pub, conn) == (2, None)
    assert [e for e, _, _ in producer.sent] == ["a1", "a2", "a3", "a2", "a3"]
    assert store.queued(conn) == []


def test_nothing_is_handed_over_while_a_failed_round_drains(tmp_path: Path) -> None:
    """After a failure, rows still in flight are waited for before anything is sent again."""
    conn = open_store(tmp_path)
    queue(conn, ("a1", 0), ("a2", 0))
    producer = ScriptedProducer()
    pub = pump.Publisher(TOPIC, producer)
    pump.hand_over(pub, conn)
    pub.failed = BROKER_DOWN
    queue(conn, ("a3", 0))
    assert pump.hand_over(pub, conn) == 0
    assert pump.restart_after_failure(pub) is None  # a1 and a2 are still in flight
    producer.poll(0)
    pump.settle(pub, conn, NOW)
    assert pump.restart_after_failure(pub) is BROKER_DOWN
    assert pump.hand_over(pub, conn) == 1


def test_a_row_the_producer_refuses_for_its_size_is_rejected_as_oversized(tmp_path: Path) -> None:
    """A record too large to produce is taken out of the queue (rejected, oversized) at once; the
    rows around it are published."""
    conn = open_store(tmp_path)
    queue(conn, ("a1", 0), ("big", 0), ("a3", 0))
    producer = ScriptedProducer(refuse={"big"})
    pub = pump.Publisher(TOPIC, producer)
    assert cycle(pub, conn) == (3, None)
    assert status(conn, "big") == ("rejected", "oversized")
    assert [status(conn, e)[0] for e in ("a1", "a3")] == ["published", "published"]
    assert store.queued(conn) == []


def test_rows_in_a_batch_refused_for_its_size_are_sent_alone_to_find_the_large_one(tmp_path: Path) -> None:
    """When the broker refuses a batch for its size, its rows are sent again one at a time, each
    after the previous one's report: the one refused alone is oversized, the others published."""
    conn = open_store(tmp_path)
    queue(conn, ("a1", 0), ("big", 0), ("a3", 0))
    producer = ScriptedProducer(lambda e, attempt: TOO_LARGE if e == "big" or attempt == 1 else None)
    pub = pump.Publisher(TOPIC, producer)
    handed, failure = cycle(pub, conn)
    assert (handed, failure) == (3, TOO_LARGE)
    assert pub.suspects == {"a1", "big", "a3"}
    assert [cycle(pub, conn)[0] for _ in range(4)] == [1, 1, 1, 0]
    assert [status(conn, e) for e in ("a1", "big", "a3")] == [
        ("published", None), ("rejected", "oversized"), ("published", None)
    ]
    assert not pub.suspects
    assert [e for e, _, _ in producer.sent][3:] == ["a1", "big", "a3"]


def test_offsets_to_commit_are_one_past_the_last_record_of_each_partition() -> None:
    """The inbox commits, per partition, the offset after the last record of the batch it stored."""

    @dataclass
    class Record:
        at: tuple[str, int, int]

        def topic(self) -> str:
            return self.at[0]

        def partition(self) -> int:
            return self.at[1]

        def offset(self) -> int:
            return self.at[2]

    batch: list[Any] = [Record(("cb.in.KH", 0, 4)), Record(("cb.in.KH", 2, 9)), Record(("cb.in.KH", 0, 5))]
    assert [(tp.partition, tp.offset) for tp in ckafka.next_offsets(batch)] == [(0, 6), (2, 10)]


async def test_a_group_commit_answers_each_request_with_its_own_outcome() -> None:
    """Requests arriving together are written as one group; each gets its outcome or exception."""
    groups: list[list[str]] = []

    def submit_many(docs: Any) -> list[Submitted | Exception]:
        groups.append([d["n"] for d in docs])
        return [ValueError("bad") if d["n"] == "x" else Submitted(d["n"], "queued") for d in docs]

    group = GroupCommit(submit_many)
    results = await asyncio.gather(*(group.submit({"n": n}) for n in ("a", "x", "b")), return_exceptions=True)
    group.close()
    assert [getattr(r, "event_id", str(r)) for r in results] == ["a", "bad", "b"]
    assert groups == [["a", "x", "b"]]


def test_the_node_imports_neither_faust_nor_aiokafka() -> None:
    """The node's modules run on confluent-kafka and aiohttp only."""
    code = ("import sys, casebridge.node.pump; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'faust', 'aiokafka', 'mode'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("alone", [True, False])
def test_a_size_refusal_counts_alone_only(tmp_path: Path, alone: bool) -> None:
    """A size refusal of a row sent alone is final; in a batch it makes the row a suspect."""
    conn = open_store(tmp_path)
    queue(conn, ("a1", 0))
    pub = pump.Publisher(TOPIC, ScriptedProducer())
    row = store.queued(conn)[0]
    pub.reports.append((row, TOO_LARGE, alone))
    pump.settle(pub, conn, NOW)
    assert status(conn, "a1") == (("rejected", "oversized") if alone else ("queued", None))
    assert pub.suspects == (set() if alone else {"a1"})
