"""The node's Kafka side on confluent-kafka, each loop on a thread of its own beside the HTTP API.

- Inbox: reads ``cb.in.<me>`` (read_committed, group ``casebridge-node-<me>``) in batches, verifies,
  decrypts and stores each batch in one SQLite transaction (``service.receive_many``, each event
  once by its id), and only then commits the batch's offsets. A crash in between re-reads the
  batch; the store keeps each event once.
- Publisher: hands the queued outbox rows to one idempotent producer in the order they were
  queued, each to its own partition of ``cb.out.<me>`` (its chain's), many in flight, and marks
  the acknowledged ones published in one transaction per round. librdkafka retries in order
  without a time limit (``message.timeout.ms=0``), so a row fails only when the broker refuses it
  for good or the producer dies: then nothing more is handed over until every row in flight has
  its report, and sending starts again from the oldest row still queued, so order per partition
  holds. A record refused for its size is taken out of the queue (``rejected``, ``oversized``):
  at once when the producer refuses it alone, and after it is sent alone when the broker refused
  its batch (its batch-mates are not at fault).
- Directory: ``ckafka.follow_directory`` applies each new signed directory to ``node.world``.

``run`` serves the HTTP API on the event loop and ends within ``STOP_SECONDS`` of SIGTERM or
SIGINT whatever the broker's state: rows in flight at that moment stay queued and are sent again
by the next run (the recipient stores an event once).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Message

from casebridge.core import topics
from casebridge.node import protection_api, service, store
from casebridge.node.app import Node, node_db, open_store, serve_http
from casebridge.node.groupcommit import GroupCommit
from casebridge.runtime import ckafka
from casebridge.runtime.logging import get_logger
from casebridge.runtime.settings import Settings
from casebridge.runtime.world import World

log = get_logger("casebridge.node")

ROUND = 2000  # rows handed to the producer at most at once (and in flight at most)
INBOX_BATCH = 500
STOP_SECONDS = 4.0  # everything is asked to stop; past this the process exits regardless
DRAIN_SECONDS = 1.0  # on stop, the publisher waits this long for reports of rows in flight
PUBLISHER_CONFIG: dict[str, Any] = {"message.timeout.ms": 0, "linger.ms": 5}


class Producing(Protocol):
    """The part of ``confluent_kafka.Producer`` the publisher uses."""

    def produce(self, topic: str, value: bytes, key: bytes, partition: int,
                on_delivery: Callable[[KafkaError | None, Message], None]) -> None: ...

    def poll(self, timeout: float) -> int: ...


Report = tuple[store.OutboxRow, KafkaError | None, bool]  # row, error, was it sent alone


@dataclass
class Publisher:
    """What the publisher knows between rounds."""

    topic: str
    producer: Producing
    after: int = 0  # rowid of the last row handed over
    in_flight: set[str] = field(default_factory=set)
    reports: list[Report] = field(default_factory=list)
    suspects: set[str] = field(default_factory=set)  # refused for size with others: send alone
    failed: KafkaError | None = None  # drain, then start again from the oldest queued row


def hand_over(pub: Publisher, conn: sqlite3.Connection, limit: int = ROUND) -> int:
    """Give the producer the next queued rows in order; how many were handed over. While a row is
    suspected of being too large, rows go one at a time, each after the previous one's report."""
    if pub.failed is not None:
        return 0
    alone = bool(pub.suspects)
    room = (0 if pub.in_flight else 1) if alone else limit - len(pub.in_flight)
    handed = 0
    for rowid, row in store.queued_after(conn, pub.after, room) if room > 0 else ():
        if not produce(pub, row, alone):
            break
        pub.after, handed = rowid, handed + 1
    return handed


def produce(pub: Publisher, row: store.OutboxRow, alone: bool) -> bool:
    """Hand one row to the producer; False when its queue is full (try again later)."""
    assert row.envelope is not None
    try:
        pub.producer.produce(pub.topic, row.envelope, key=row.case_ref.encode(), partition=row.partition,
                             on_delivery=partial(on_delivery, pub, row, alone))
    except BufferError:
        return False
    except KafkaException as exc:  # refused before sending: this row alone is the cause
        pub.reports.append((row, exc.args[0], True))
        return True
    pub.in_flight.add(row.event_id)
    return True


def on_delivery(pub: Publisher, row: store.OutboxRow, alone: bool, error: KafkaError | None, _: Any) -> None:
    pub.in_flight.discard(row.event_id)
    pub.reports.append((row, error, alone))


def settle(pub: Publisher, conn: sqlite3.Connection, now: datetime) -> list[store.OutboxRow]:
    """Record the reports received so far (one transaction); the rows now published."""
    reports, pub.reports = pub.reports, []
    published, oversized = [], []
    for row, error, alone in reports:
        if error is None:
            published.append(row)
            pub.suspects.discard(row.event_id)
        elif error.code() == KafkaError.MSG_SIZE_TOO_LARGE and alone:
            oversized.append(row)
            pub.suspects.discard(row.event_id)
        else:
            if error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                pub.suspects.add(row.event_id)
            pub.failed = pub.failed or error
    if published or oversized:
        try:
            with store.transaction(conn):
                store.mark_published_many(conn, [row.event_id for row in published], now)
                for row in oversized:
                    store.mark_oversized(conn, row.event_id)
        except sqlite3.Error:  # nothing was marked: the same reports are recorded on the next try
            pub.reports = [r for r in reports if r[1] is None or r[0] in oversized] + pub.reports
            raise
    for row in oversized:
        log.error("publish_refused", event_id=row.event_id, case_ref=row.case_ref, code="oversized",
                  size=len(row.envelope or b""))
    return published


def restart_after_failure(pub: Publisher) -> KafkaError | None:
    """Once nothing is in flight after a failure: start again from the oldest queued row; the
    failure, or None while rows are still in flight (or there was none)."""
    if pub.failed is None or pub.in_flight:
        return None
    failed, pub.failed, pub.after = pub.failed, None, 0
    return failed


def publish_forever(node: Node, settings: Settings, stop: threading.Event) -> None:
    """The publisher loop (a thread), until ``stop``."""
    conn = store.connect(node_db(settings.home, node.participant))
    conn.execute("PRAGMA synchronous=NORMAL")  # "published" need not survive a power cut: resent
    pub = Publisher(topics.outbox(node.participant), ckafka.producer(settings, **PUBLISHER_CONFIG))
    backoff = 0.5
    while not stop.is_set():
        try:
            handed = hand_over(pub, conn)
            pub.producer.poll(0.05 if pub.in_flight else 0)
            settled = settle(pub, conn, datetime.now(UTC))
        except sqlite3.Error as exc:  # e.g. SQLITE_PROTOCOL after a restart: on a new connection;
            # a row sent but not marked is sent again, and the router drops the same bytes twice
            log.error("outbox_store_failed", participant=node.participant, error=type(exc).__name__,
                      why=str(exc), action="again on a new connection")
            conn.close()
            stop.wait(1.0)
            conn = store.connect(node_db(settings.home, node.participant))
            conn.execute("PRAGMA synchronous=NORMAL")
            continue
        say_published(node, settled)
        failure = restart_after_failure(pub)
        if failure is not None:
            log.warning("publish_retry", participant=node.participant, error=failure.name())
            if failure.fatal():
                pub.producer = ckafka.producer(settings, **PUBLISHER_CONFIG)
            stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)
        elif not handed and not pub.in_flight and not pub.reports:
            backoff = 0.5
            node.wake.wait(0.5)
            node.wake.clear()
    drain_until = time.monotonic() + DRAIN_SECONDS  # take the reports already on their way
    while pub.in_flight and time.monotonic() < drain_until:
        pub.producer.poll(0.1)
        say_published(node, settle(pub, conn, datetime.now(UTC)))
    conn.close()


def say_published(node: Node, rows: list[store.OutboxRow]) -> None:
    for row in rows:
        log.info("published", participant=node.participant, event_id=row.event_id,
                 event_type=row.event_type, case_ref=row.case_ref, partition=row.partition,
                 sequence=row.sequence)


def wait_until_current(node: Node, stop: threading.Event) -> bool:
    """Wait while the directory in use has expired (fail closed); False when stopped first."""
    said = False
    while node.world.directory.expires_at <= datetime.now(UTC):
        if not said:
            log.error("directory_expired", expired_at=node.world.directory.expires_at.isoformat(),
                      waiting="inbox", fix="publish a current directory on cb.directory")
            said = True
        if stop.wait(1.0):
            return False
    return True


def receive_batch(node: Node, conn: sqlite3.Connection, messages: list[Message]) -> None:
    """Store one batch of inbox records in one transaction and log each outcome."""
    values = [m.value() for m in messages if m.value() is not None]
    outcomes = service.receive_many(node.world, node.me, conn, values, datetime.now(UTC), node.vault)
    for outcome in outcomes:
        log.info("received", participant=node.participant, event_id=outcome.event_id,
                 outcome=outcome.outcome, code=outcome.code,
                 event_type=outcome.header.event_type if outcome.header else None)


def receive_forever(node: Node, settings: Settings, stop: threading.Event, topic: str | None = None,
                    group_id: str | None = None) -> None:
    """The inbox loop (a thread): poll a batch, store it, commit its offsets, until ``stop``."""
    conn = store.connect(node_db(settings.home, node.participant))
    consumer = ckafka.consumer(settings, group_id or f"casebridge-node-{node.participant}")
    consumer.subscribe([topic or topics.inbox(node.participant)])
    try:
        while not stop.is_set():
            messages = [m for m in ckafka.take_batch(consumer, INBOX_BATCH, 0.5) if not inbox_error(m)]
            if not messages or not wait_until_current(node, stop):
                continue
            try:
                receive_batch(node, conn, messages)
            except sqlite3.Error as exc:  # e.g. SQLITE_PROTOCOL after a restart: the batch again
                log.error("inbox_store_failed", participant=node.participant, error=type(exc).__name__,
                          why=str(exc), action="the batch is read again, on a new connection")
                for tp in ckafka.first_offsets(messages):
                    consumer.seek(tp)
                conn.close()
                stop.wait(1.0)
                conn = store.connect(node_db(settings.home, node.participant))
                continue
            consumer.commit(offsets=ckafka.next_offsets(messages), asynchronous=True)
            node.wake.set()  # receipts were queued
    finally:
        consumer.close()
        conn.close()


def inbox_error(message: Message) -> bool:
    error = message.error()
    if error is not None and error.code() != KafkaError._PARTITION_EOF:
        log.warning("inbox_error", error=error.name(), why=error.str())
    return error is not None


def create_node(settings: Settings, world: World, participant: str) -> Node:
    """The node's state, its store opened for ``settings.partitions`` chains."""
    world = world.in_custody_of(participant)  # this node can sign as no one else
    conn = open_store(settings.home, participant, settings.partitions)
    node = Node(settings, world, world.identity(participant), conn)
    node.vault = protection_api.open_node_vault(settings, conn, node_db(settings.home, participant).parent)
    writer = open_store(settings.home, participant)
    node.group = GroupCommit(lambda docs: service.submit_many(node.world, node.me, writer, docs,
                                                              datetime.now(UTC)))
    return node


def start_threads(node: Node, settings: Settings, stop: threading.Event) -> list[threading.Thread]:
    threads = [
        threading.Thread(target=loop, args=(node, settings, stop), name=name, daemon=True)
        for name, loop in (("node-inbox", receive_forever), ("node-publisher", publish_forever))
    ]
    for thread in threads:
        thread.start()
    return [*threads, ckafka.follow_directory(settings, node, stop,
                                                   f"casebridge-node-{node.participant}")]


async def serve(node: Node, settings: Settings, port: int) -> None:
    """Run the API and the Kafka loops until SIGTERM / SIGINT, then stop them."""
    stop, done = threading.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    threads = start_threads(node, settings, stop)
    http = asyncio.create_task(serve_http(node, port))
    await done.wait()
    deadline = time.monotonic() + STOP_SECONDS
    log.info("node_stopping", participant=node.participant)
    stop.set()
    node.wake.set()
    http.cancel()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(thread.is_alive() for thread in threads):  # a Kafka call did not return in time
        log.warning("node_stop_forced", participant=node.participant)
        os._exit(0)


def run(settings: Settings, world: World, participant: str, port: int) -> int:
    """``casebridge node run``: the node until it is told to stop; its exit code."""
    node = create_node(settings, world, participant)
    asyncio.run(serve(node, settings, port))
    log.info("node_stopped", participant=participant)
    return 0
