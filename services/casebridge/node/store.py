"""A node's durable store (SQLite): the outbox it publishes from, the inbox it stores into once.

The sender's chain is one chain per partition of ``cb.out.<me>`` (the partition of the event's
case reference): each outbox row is written, with its partition and its position in that
partition's chain, in the same transaction that takes the partition's next sequence number; the
publisher sends queued rows in the order they were written (so in sequence order per partition)
until the broker acknowledges them, so a broker outage loses nothing. The inbox's primary key is the event id:
a duplicate on the wire is stored once (``store_inbound`` says whether it was new).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from casebridge.core.topics import DEFAULT_PARTITIONS

SCHEMA = """
CREATE TABLE IF NOT EXISTS layout (
    id INTEGER PRIMARY KEY CHECK (id = 1), partitions INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS chains (
    partition INTEGER PRIMARY KEY, last_sequence INTEGER NOT NULL, last_hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    event_id TEXT PRIMARY KEY, partition INTEGER, sequence INTEGER, case_ref TEXT NOT NULL,
    event_type TEXT NOT NULL, recipients TEXT NOT NULL, envelope BLOB, status TEXT NOT NULL,
    reason TEXT, created_at TEXT NOT NULL, published_at TEXT, UNIQUE (partition, sequence));
CREATE INDEX IF NOT EXISTS outbox_status ON outbox (status);
CREATE TABLE IF NOT EXISTS receipts (
    event_id TEXT NOT NULL, kind TEXT NOT NULL, participant TEXT NOT NULL, reason TEXT,
    at TEXT NOT NULL, PRIMARY KEY (event_id, kind, participant));
CREATE TABLE IF NOT EXISTS inbox (
    event_id TEXT PRIMARY KEY, sender TEXT NOT NULL, event_type TEXT NOT NULL,
    case_ref TEXT NOT NULL, correlation_id TEXT, received_at TEXT NOT NULL,
    record TEXT NOT NULL, processed_at TEXT);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT, code TEXT NOT NULL, why TEXT NOT NULL,
    envelope BLOB NOT NULL, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS case_state (case_ref TEXT PRIMARY KEY, state TEXT NOT NULL);
"""


@dataclass(frozen=True)
class OutboxRow:
    event_id: str
    sequence: int
    case_ref: str
    event_type: str
    recipients: tuple[str, ...]
    envelope: bytes | None
    status: str  # queued, published, delivered, processed, rejected
    reason: str | None
    partition: int  # of cb.out.<sender>; its chain holds ``sequence``


class StoreMismatch(RuntimeError):
    """A store written with another chain layout than the one asked for."""


def connect(path: Path, partitions: int | None = None) -> sqlite3.Connection:
    """Open (creating if needed) a node store; WAL so the API reads while the pump writes, and
    every commit synced to disk (``synchronous=FULL``): a commit is durable when it returns.

    A new store keeps one chain per partition of ``partitions`` (default ``DEFAULT_PARTITIONS``);
    an existing one keeps its own count, and ``StoreMismatch`` says when it is not ``partitions``
    (a different count would move cases to other chains)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=10000")  # the API, the submitter and the pump write in turn
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'chain'").fetchone():
        raise StoreMismatch(f"{path} keeps one chain per sender; this node keeps one per partition")
    conn.executescript(SCHEMA)
    conn.execute("INSERT OR IGNORE INTO layout VALUES (1, ?)", (partitions or DEFAULT_PARTITIONS,))
    kept = partition_count(conn)
    if partitions is not None and partitions != kept:
        raise StoreMismatch(f"{path} keeps chains for {kept} partitions, not {partitions}")
    return conn


def partition_count(conn: sqlite3.Connection) -> int:
    """The number of partitions of ``cb.out.<me>`` this store keeps a chain for."""
    return int(conn.execute("SELECT partitions FROM layout WHERE id = 1").fetchone()[0])


_WRITERS: dict[str, threading.RLock] = {}
_WRITERS_GUARD = threading.Lock()


def writer_lock(conn: sqlite3.Connection) -> threading.RLock:
    """The lock that this process's writers of ``conn``'s database file take turns on."""
    path = str(conn.execute("PRAGMA database_list").fetchone()[2])
    with _WRITERS_GUARD:
        return _WRITERS.setdefault(path, threading.RLock())


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction. The node's writers (group commit, inbox, publisher) queue on one lock
    in the process first: SQLite's busy handler polls with sleeps of up to 100 ms, so a writer
    waiting there could sleep on long after the lock was free (other processes still meet it)."""
    with writer_lock(conn):
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def chain_head(conn: sqlite3.Connection, partition: int) -> tuple[int, bytes]:
    """The last sequence number and envelope hash of this sender's chain in ``partition``
    ((0, b"") before its first event)."""
    row = conn.execute(
        "SELECT last_sequence, last_hash FROM chains WHERE partition = ?", (partition,)
    ).fetchone()
    return (int(row[0]), bytes(row[1])) if row else (0, b"")


def append_outbox(conn: sqlite3.Connection, row: OutboxRow, envelope_hash: bytes, now: datetime) -> None:
    """Queue a sealed envelope and advance its partition's chain; call inside ``transaction``."""
    conn.execute(
        "INSERT INTO outbox VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
        (
            row.event_id,
            row.partition,
            row.sequence,
            row.case_ref,
            row.event_type,
            json.dumps(row.recipients),
            row.envelope,
            row.status,
            row.reason,
            now.isoformat(),
        ),
    )
    if row.envelope is not None:
        conn.execute(
            "INSERT OR REPLACE INTO chains VALUES (?, ?, ?)", (row.partition, row.sequence, envelope_hash)
        )


def record_refusal(
    conn: sqlite3.Connection, event_id: str, case_ref: str, event_type: str, code: str, now: datetime
) -> None:
    """Keep an event the node refused before sealing (nothing is dropped silently)."""
    conn.execute(
        "INSERT OR IGNORE INTO outbox VALUES (?, NULL, NULL, ?, ?, '[]', NULL, 'rejected', ?, ?, NULL)",
        (event_id, case_ref, event_type, code, now.isoformat()),
    )


SELECT_ROW = (
    "SELECT event_id, sequence, case_ref, event_type, recipients, envelope, status, reason, partition "
    "FROM outbox "
)


def queued(conn: sqlite3.Connection, limit: int = 500) -> list[OutboxRow]:
    """Envelopes not yet acknowledged by the broker, in the order they were queued (so in
    sequence order within each partition)."""
    rows = conn.execute(
        SELECT_ROW + "WHERE status = 'queued' ORDER BY rowid LIMIT ?",
        (limit,),
    ).fetchall()
    return [_outbox_row(r) for r in rows]


def queued_after(conn: sqlite3.Connection, after: int, limit: int) -> list[tuple[int, OutboxRow]]:
    """``queued`` from the row after ``after`` (a rowid) on, each with its rowid: the publisher's
    cursor over the queue."""
    rows = conn.execute(
        SELECT_ROW.replace("SELECT ", "SELECT rowid, ", 1)
        + "WHERE status = 'queued' AND rowid > ? ORDER BY rowid LIMIT ?",
        (after, limit),
    ).fetchall()
    return [(int(r[0]), _outbox_row(r[1:])) for r in rows]


def mark_published(conn: sqlite3.Connection, event_id: str, now: datetime) -> None:
    conn.execute(
        "UPDATE outbox SET status = 'published', published_at = ? WHERE event_id = ? AND status = 'queued'",
        (now.isoformat(), event_id),
    )


def mark_published_all(conn: sqlite3.Connection, event_ids: list[str], now: datetime) -> None:
    """``mark_published`` for many, in one transaction."""
    if not event_ids:
        return
    with transaction(conn):
        mark_published_many(conn, event_ids, now)


def mark_published_many(conn: sqlite3.Connection, event_ids: list[str], now: datetime) -> None:
    """``mark_published`` for many, inside the caller's transaction."""
    conn.executemany(
        "UPDATE outbox SET status = 'published', published_at = ? WHERE event_id = ? AND status = 'queued'",
        [(now.isoformat(), event_id) for event_id in event_ids],
    )


def mark_oversized(conn: sqlite3.Connection, event_id: str) -> None:
    """Take a queued envelope the broker refuses for its size out of the queue, for good."""
    conn.execute(
        "UPDATE outbox SET status = 'rejected', reason = 'oversized' "
        "WHERE event_id = ? AND status = 'queued'",
        (event_id,),
    )


def outbox_row(conn: sqlite3.Connection, event_id: str) -> OutboxRow | None:
    row = conn.execute(
        SELECT_ROW + "WHERE event_id = ?",
        (event_id,),
    ).fetchone()
    return _outbox_row(row) if row else None


def _outbox_row(row: tuple[Any, ...]) -> OutboxRow:
    return OutboxRow(
        row[0],
        row[1] or 0,
        row[2],
        row[3],
        tuple(json.loads(row[4])),
        bytes(row[5]) if row[5] is not None else None,
        row[6],
        row[7],
        row[8] or 0,
    )


STATUS_AFTER = {"delivered": "delivered", "processed": "processed", "rejected": "rejected"}
STATUS_RANK = {"queued": 0, "published": 1, "delivered": 2, "processed": 3, "rejected": 4}


def record_receipt(
    conn: sqlite3.Connection, event_id: str, kind: str, participant: str, reason: str | None, now: datetime
) -> None:
    """Note a receipt for one of our events and move its status forward (never back)."""
    conn.execute(
        "INSERT OR IGNORE INTO receipts VALUES (?, ?, ?, ?, ?)",
        (event_id, kind, participant, reason, now.isoformat()),
    )
    current = conn.execute("SELECT status FROM outbox WHERE event_id = ?", (event_id,)).fetchone()
    new = STATUS_AFTER.get(kind)
    if current and new and STATUS_RANK[new] > STATUS_RANK.get(current[0], 0):
        conn.execute(
            "UPDATE outbox SET status = ?, reason = COALESCE(?, reason) WHERE event_id = ?",
            (new, reason, event_id),
        )


def receipts_for(conn: sqlite3.Connection, event_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT kind, participant, reason, at FROM receipts WHERE event_id = ? ORDER BY at", (event_id,)
    ).fetchall()
    return [{"kind": k, "participant": p, "reason": r, "at": a} for k, p, r, a in rows]


def store_inbound(conn: sqlite3.Connection, record: Mapping[str, Any], now: datetime) -> bool:
    """Store a decrypted inbound event once; True when it was new (False: a duplicate)."""
    cursor = conn.execute(
        "INSERT OR IGNORE INTO inbox VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
        (
            record["event_id"],
            record["sender"],
            record["event_type"],
            record["case_ref"],
            record.get("correlation_id"),
            now.isoformat(),
            json.dumps(record, default=str),
        ),
    )
    return cursor.rowcount == 1


def mark_processed(conn: sqlite3.Connection, event_id: str, now: datetime) -> bool:
    """Mark an inbox event handled by the hub; False if unknown or already processed."""
    cursor = conn.execute(
        "UPDATE inbox SET processed_at = ? WHERE event_id = ? AND processed_at IS NULL",
        (now.isoformat(), event_id),
    )
    return cursor.rowcount == 1


def inbox_page(conn: sqlite3.Connection, after: str = "", limit: int = 50) -> list[dict[str, Any]]:
    """Inbox events in arrival order (``arrival``: the order they were stored in, also within one
    batch that shares a ``received_at``), after the cursor ``page_cursor`` gave; a cursor that is
    not one gives an empty page."""
    start = int(after) if after.isdigit() else (0 if after == "" else None)
    if start is None:
        return []
    rows = conn.execute(
        "SELECT rowid, record, received_at, processed_at FROM inbox WHERE rowid > ? ORDER BY rowid LIMIT ?",
        (start, limit),
    ).fetchall()
    return [{**json.loads(r), "arrival": n, "received_at": at, "processed_at": done}
            for n, r, at, done in rows]


def page_cursor(page: list[dict[str, Any]]) -> str | None:
    """The cursor that continues after ``page`` (None after an empty one)."""
    return str(page[-1]["arrival"]) if page else None


def inbox_record(conn: sqlite3.Connection, event_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT record FROM inbox WHERE event_id = ?", (event_id,)).fetchone()
    return dict(json.loads(row[0])) if row else None


def quarantine(conn: sqlite3.Connection, code: str, why: str, envelope: bytes, now: datetime) -> None:
    """Keep an inbound envelope this node could not accept, with its reject code."""
    conn.execute(
        "INSERT INTO quarantine (code, why, envelope, at) VALUES (?, ?, ?, ?)",
        (code, why, envelope, now.isoformat()),
    )


def load_case_state(conn: sqlite3.Connection, case_ref: str) -> dict[str, Any]:
    row = conn.execute("SELECT state FROM case_state WHERE case_ref = ?", (case_ref,)).fetchone()
    return dict(json.loads(row[0])) if row else {}


def save_case_state(conn: sqlite3.Connection, case_ref: str, state: Mapping[str, Any]) -> None:
    conn.execute("INSERT OR REPLACE INTO case_state VALUES (?, ?)", (case_ref, json.dumps(state)))
