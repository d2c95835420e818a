"""The node's SQLite store (``casebridge.node.store``) on a real database file."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from casebridge.node import store

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def open_store(tmp_path: Path) -> sqlite3.Connection:
    return store.connect(tmp_path / "node" / "node.sqlite")


def outbox_row(event_id: str, sequence: int, partition: int = 0) -> store.OutboxRow:
    return store.OutboxRow(
        event_id, sequence, "case-1", "return_plan.proposed", ("KH.MOSVY",), b"env", "queued", None,
        partition,
    )


def queue(
    conn: sqlite3.Connection, event_id: str, sequence: int, digest: bytes = b"h", partition: int = 0
) -> None:
    with store.transaction(conn):
        store.append_outbox(conn, outbox_row(event_id, sequence, partition), digest, NOW)


def inbound(event_id: str, **more: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "sender": "TH.MSDHS",
        "event_type": "return_plan.proposed",
        "case_ref": "case-1",
        "correlation_id": None,
        "payload": {},
        **more,
    }


def test_a_new_store_starts_an_empty_chain_in_every_partition(tmp_path: Path) -> None:
    """A freshly created store has chain head (0, empty hash) in each partition and nothing queued."""
    conn = open_store(tmp_path)
    assert [store.chain_head(conn, p) for p in range(6)] == [(0, b"")] * 6
    assert store.queued(conn) == []
    assert store.partition_count(conn) == 6


def test_the_partition_count_is_kept_by_the_store(tmp_path: Path) -> None:
    """A store made for 3 partitions stays so; opening it for another count is refused."""
    path = tmp_path / "node.sqlite"
    store.connect(path, 3).close()
    assert store.partition_count(store.connect(path)) == 3
    assert store.partition_count(store.connect(path, 3)) == 3
    with pytest.raises(store.StoreMismatch):
        store.connect(path, 6)


def test_a_store_with_one_chain_per_sender_is_refused(tmp_path: Path) -> None:
    """A store from before per-partition chains is not silently reused."""
    path = tmp_path / "node.sqlite"
    sqlite3.connect(path).execute("CREATE TABLE chain (id INTEGER PRIMARY KEY)").connection.commit()
    with pytest.raises(store.StoreMismatch):
        store.connect(path)


def test_each_partition_has_its_own_chain(tmp_path: Path) -> None:
    """Appending in one partition moves that partition's head only; sequences repeat across
    partitions but never within one."""
    conn = open_store(tmp_path)
    queue(conn, "a1", 1, b"a1", partition=0)
    queue(conn, "b1", 1, b"b1", partition=4)
    queue(conn, "a2", 2, b"a2", partition=0)
    assert [store.chain_head(conn, p) for p in (0, 4, 5)] == [(2, b"a2"), (1, b"b1"), (0, b"")]
    assert [(r.event_id, r.partition, r.sequence) for r in store.queued(conn)] == [
        ("a1", 0, 1), ("b1", 4, 1), ("a2", 0, 2)
    ]
    with pytest.raises(sqlite3.IntegrityError):
        queue(conn, "b1-again", 1, partition=4)


def test_reopening_keeps_the_chain(tmp_path: Path) -> None:
    """The chain head and the outbox survive closing and reopening the file."""
    conn = open_store(tmp_path)
    queue(conn, "e1", 1, b"h1")
    conn.close()
    again = open_store(tmp_path)
    assert store.chain_head(again, 0) == (1, b"h1")
    assert [r.event_id for r in store.queued(again)] == ["e1"]


def test_append_outbox_advances_the_chain_and_queues_in_write_order(tmp_path: Path) -> None:
    """Each queued envelope moves its partition's head; queued() returns rows in the order they
    were written (the order their sequence numbers were taken in)."""
    conn = open_store(tmp_path)
    for event_id, sequence in (("c", 3), ("a", 1), ("b", 2)):
        queue(conn, event_id, sequence, event_id.encode())
    assert store.chain_head(conn, 0) == (2, b"b")  # the last one written, not the highest
    assert [(r.event_id, r.sequence) for r in store.queued(conn)] == [("c", 3), ("a", 1), ("b", 2)]
    assert store.queued(conn, limit=2)[-1].sequence == 1


def test_a_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    """An error inside the transaction rolls back the outbox row and the chain move together."""
    conn = open_store(tmp_path)
    with pytest.raises(RuntimeError), store.transaction(conn):
        store.append_outbox(conn, outbox_row("e1", 1), b"h1", NOW)
        raise RuntimeError("crash between write and commit")
    assert store.chain_head(conn, 0) == (0, b"")
    assert store.outbox_row(conn, "e1") is None


def test_duplicate_sequence_is_refused(tmp_path: Path) -> None:
    """Two outbox rows of one partition can never share a sequence number."""
    conn = open_store(tmp_path)
    queue(conn, "e1", 1)
    with pytest.raises(sqlite3.IntegrityError):
        queue(conn, "e2", 1)


def test_refusal_is_kept_without_a_sequence(tmp_path: Path) -> None:
    """A refused event is kept as rejected with its code and does not touch the chain."""
    conn = open_store(tmp_path)
    store.record_refusal(conn, "r1", "case-1", "return_plan.proposed", "no_agreement", NOW)
    row = store.outbox_row(conn, "r1")
    assert row == store.OutboxRow(
        "r1", 0, "case-1", "return_plan.proposed", (), None, "rejected", "no_agreement", 0
    )
    assert store.chain_head(conn, 0) == (0, b"")
    assert store.queued(conn) == []


def test_mark_published_only_moves_queued_rows(tmp_path: Path) -> None:
    """Publishing moves queued to published and never overwrites a later status."""
    conn = open_store(tmp_path)
    queue(conn, "e1", 1)
    store.mark_published(conn, "e1", NOW)
    assert store.outbox_row(conn, "e1").status == "published"  # type: ignore[union-attr]
    store.record_receipt(conn, "e1", "delivered", "KH.MOSVY", None, NOW)
    store.mark_published(conn, "e1", NOW)
    assert store.outbox_row(conn, "e1").status == "delivered"  # type: ignore[union-attr]


def test_mark_published_all_moves_the_acknowledged_rows_only(tmp_path: Path) -> None:
    """The publisher marks the rows the broker acknowledged in one go; the others stay queued."""
    conn = open_store(tmp_path)
    for n in range(1, 5):
        queue(conn, f"e{n}", n)
    store.mark_published_all(conn, ["e1", "e3"], NOW)
    store.mark_published_all(conn, [], NOW)
    assert [row.event_id for row in store.queued(conn)] == ["e2", "e4"]
    assert not conn.in_transaction


def test_mark_oversized_takes_a_queued_row_out_for_good(tmp_path: Path) -> None:
    """A row the broker refuses for its size becomes rejected (oversized) and is not queued again."""
    conn = open_store(tmp_path)
    queue(conn, "e1", 1)
    queue(conn, "e2", 2)
    store.mark_oversized(conn, "e1")
    row = store.outbox_row(conn, "e1")
    assert (row.status, row.reason) == ("rejected", "oversized")  # type: ignore[union-attr]
    assert [r.event_id for r in store.queued(conn)] == ["e2"]


@pytest.mark.parametrize(
    ("kinds", "status"),
    [
        (["delivered"], "delivered"),
        (["delivered", "processed"], "processed"),
        (["processed", "delivered"], "processed"),
        (["processed", "delivered", "delivered"], "processed"),
        (["rejected"], "rejected"),
        (["rejected", "delivered"], "rejected"),
        (["unknown-kind"], "queued"),
    ],
)
def test_receipts_move_status_forward_never_back(tmp_path: Path, kinds: list[str], status: str) -> None:
    """Each receipt kind moves the outbox status forward only; every receipt is kept once."""
    conn = open_store(tmp_path)
    queue(conn, "e1", 1)
    for kind in kinds:
        store.record_receipt(conn, "e1", kind, "KH.MOSVY", None, NOW)
    assert store.outbox_row(conn, "e1").status == status  # type: ignore[union-attr]
    assert sorted(r["kind"] for r in store.receipts_for(conn, "e1")) == sorted(set(kinds))


def test_rejected_receipt_keeps_its_reason(tmp_path: Path) -> None:
    """A receipt.rejected's code becomes the outbox row's reason."""
    conn = open_store(tmp_path)
    queue(conn, "e1", 1)
    store.record_receipt(conn, "e1", "rejected", "REG.ROUTER", "consent_missing", NOW)
    row = store.outbox_row(conn, "e1")
    assert (row.status, row.reason) == ("rejected", "consent_missing")  # type: ignore[union-attr]


def test_receipt_for_an_unknown_event_is_kept(tmp_path: Path) -> None:
    """A receipt naming an event not in the outbox is still recorded."""
    conn = open_store(tmp_path)
    store.record_receipt(conn, "ghost", "rejected", "REG.ROUTER", "replay", NOW)
    assert store.receipts_for(conn, "ghost") == [
        {"kind": "rejected", "participant": "REG.ROUTER", "reason": "replay", "at": NOW.isoformat()}
    ]


def test_inbound_is_stored_once(tmp_path: Path) -> None:
    """The first copy of an inbound event is new; a second copy is a duplicate and changes nothing."""
    conn = open_store(tmp_path)
    assert store.store_inbound(conn, inbound("e1", payload={"n": 1}), NOW) is True
    assert store.store_inbound(conn, inbound("e1", payload={"n": 2}), NOW + timedelta(seconds=1)) is False
    assert store.inbox_record(conn, "e1")["payload"] == {"n": 1}  # type: ignore[index]
    assert store.inbox_record(conn, "nope") is None


def test_mark_processed_once(tmp_path: Path) -> None:
    """An inbox event is marked processed once; again, or an unknown id, is False."""
    conn = open_store(tmp_path)
    store.store_inbound(conn, inbound("e1"), NOW)
    assert store.mark_processed(conn, "e1", NOW) is True
    assert store.mark_processed(conn, "e1", NOW) is False
    assert store.mark_processed(conn, "nope", NOW) is False
    assert store.inbox_page(conn)[0]["processed_at"] == NOW.isoformat()


def test_inbox_page_walks_with_the_cursor(tmp_path: Path) -> None:
    """Pages follow arrival order (the order stored, also within one received_at) and the last
    row's cursor continues exactly; a cursor that is not one gives an empty page."""
    conn = open_store(tmp_path)
    arrivals = [("e3", 0), ("e1", 0), ("e2", 5), ("e0", 9), ("e9", 9), ("e5", 12)]
    for event_id, seconds in arrivals:
        store.store_inbound(conn, inbound(event_id), NOW + timedelta(seconds=seconds))
    seen: list[str] = []
    cursor = ""
    while page := store.inbox_page(conn, cursor, limit=2):
        assert len(page) <= 2
        seen += [r["event_id"] for r in page]
        cursor = store.page_cursor(page) or ""
    assert seen == ["e3", "e1", "e2", "e0", "e9", "e5"]
    assert store.inbox_page(conn, "2026-01-01|e1") == []
    assert store.inbox_page(conn)[0]["received_at"] == NOW.isoformat()


def test_quarantine_keeps_the_bytes_and_code(tmp_path: Path) -> None:
    """An envelope the node could not accept is kept with its code, reason and exact bytes."""
    conn = open_store(tmp_path)
    store.quarantine(conn, "bad_signature", "signature does not verify", b"\x00\x01", NOW)
    rows = conn.execute("SELECT code, why, envelope, at FROM quarantine").fetchall()
    assert rows == [("bad_signature", "signature does not verify", b"\x00\x01", NOW.isoformat())]


def test_case_state_round_trips(tmp_path: Path) -> None:
    """A case's saved flags are read back; an unknown case has none."""
    conn = open_store(tmp_path)
    assert store.load_case_state(conn, "case-1") == {}
    store.save_case_state(conn, "case-1", {"consent": ["ngo_sharing"], "witness_hold": True})
    store.save_case_state(conn, "case-1", {"consent": [], "witness_hold": False})
    assert store.load_case_state(conn, "case-1") == {"consent": [], "witness_hold": False}
