"""What a node does with an event (``casebridge.node.service``): a real World and SQLite files."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from casebridge.core import sealing, topics
from casebridge.core.errors import Malformed
from casebridge.core.jsonform import to_json
from casebridge.core.model import Header
from casebridge.node import service, store
from casebridge.runtime.world import World, bootstrap_network
from tests.unit.envelope_factories import example_payload

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SENDER, RECIPIENT = "TH.MSDHS", "KH.MOSVY"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """One run-time network (keys generated, agreements signed) shared by this module's tests."""
    return bootstrap_network(tmp_path_factory.mktemp("network"), NOW - timedelta(hours=1))


def node(tmp_path: Path, participant: str) -> sqlite3.Connection:
    return store.connect(tmp_path / participant / "node.sqlite")


def event(
    event_type: str = "return_plan.proposed", to: tuple[str, ...] = ("KH",), **more: Any
) -> dict[str, Any]:
    """A hub's JSON event with a full example payload."""
    return {
        "event_type": event_type,
        "case_ref": "case-7f3a",
        "to": list(to),
        "payload": to_json(example_payload(event_type)),
        **more,
    }


def submit(
    world: World, conn: sqlite3.Connection, doc: dict[str, Any], who: str = SENDER, now: datetime = NOW
) -> service.Submitted:
    return service.submit(world, world.identity(who), conn, doc, now)


def envelope_of(conn: sqlite3.Connection, event_id: str) -> bytes:
    row = store.outbox_row(conn, event_id)
    assert row is not None and row.envelope is not None
    return row.envelope


def sent_to_recipient(world: World, tmp_path: Path) -> tuple[sqlite3.Connection, str, bytes]:
    """The sender's store, and one event it sealed for the recipient."""
    conn = node(tmp_path, SENDER)
    result = submit(world, conn, event())
    assert result.status == "queued", result
    return conn, result.event_id, envelope_of(conn, result.event_id)


def queued_types(conn: sqlite3.Connection) -> list[str]:
    return [r.event_type for r in store.queued(conn)]


def test_submit_queues_a_chain(world: World, tmp_path: Path) -> None:
    """Submitted events are queued with sequence 1, 2, 3, each pointing at the previous hash."""
    conn = node(tmp_path, SENDER)
    ids = [submit(world, conn, event()).event_id for _ in range(3)]
    rows = store.queued(conn)
    assert [r.event_id for r in rows] == ids
    assert [r.sequence for r in rows] == [1, 2, 3]
    ctx = world.context(NOW)
    previous = b""
    for row in rows:
        verified = sealing.verify(row.envelope or b"", ctx.directory, NOW, ctx.max_age, schemas=world.schemas)
        assert (verified.header.sequence, verified.header.prev_hash) == (row.sequence, previous)
        previous = sealing.envelope_hash(row.envelope or b"")
    assert store.chain_head(conn, service.partition_of("case-7f3a", 6)) == (3, previous)


def cases_in_two_partitions() -> tuple[str, str, str]:
    """Three case references: the first two in one partition of six, the third in another."""
    by_partition: dict[int, list[str]] = {}
    for n in range(100):
        by_partition.setdefault(topics.partition_for(f"case-{n}".encode(), 6), []).append(f"case-{n}")
    pair = next(refs for refs in by_partition.values() if len(refs) >= 2)
    other = next(refs[0] for p, refs in by_partition.items() if refs is not pair)
    return pair[0], pair[1], other


def test_each_partition_of_the_outbox_has_its_own_chain(world: World, tmp_path: Path) -> None:
    """Events go to the murmur2 partition of their case reference and chain within it: sequence 1
    with an empty prev_hash in each partition, then the hash of that partition's previous event."""
    conn = node(tmp_path, SENDER)
    first, second, other = cases_in_two_partitions()
    for case_ref in (first, other, second, other):
        assert submit(world, conn, event(case_ref=case_ref)).status == "queued"
    rows = store.queued(conn)
    assert [r.partition for r in rows] == [topics.partition_for(r.case_ref.encode(), 6) for r in rows]
    assert [(r.case_ref, r.sequence) for r in rows] == [(first, 1), (other, 1), (second, 2), (other, 2)]
    ctx = world.context(NOW)
    heads: dict[int, bytes] = {}
    for row in rows:
        verified = sealing.verify(row.envelope or b"", ctx.directory, NOW, ctx.max_age, schemas=world.schemas)
        assert verified.header.prev_hash == heads.get(row.partition, b"")
        heads[row.partition] = sealing.envelope_hash(row.envelope or b"")
    assert store.chain_head(conn, rows[-1].partition) == (2, heads[rows[-1].partition])


def test_the_store_partition_count_decides_the_partition(world: World, tmp_path: Path) -> None:
    """A store made for one partition puts every case in partition 0, in one chain."""
    conn = store.connect(tmp_path / "one" / "node.sqlite", 1)
    first, _, other = cases_in_two_partitions()
    submit(world, conn, event(case_ref=first))
    submit(world, conn, event(case_ref=other))
    assert [(r.partition, r.sequence) for r in store.queued(conn)] == [(0, 1), (0, 2)]


def test_submit_many_commits_a_group_and_isolates_a_bad_document(world: World, tmp_path: Path) -> None:
    """A group commit queues the good documents in order; a malformed one gets its exception and
    leaves nothing, a refused one is kept as rejected, and the chain has no hole."""
    conn = node(tmp_path, SENDER)
    docs = [event(), {"event_type": "nope"}, event(to=("KH.CCPCR",)), event()]
    results = service.submit_many(world, world.identity(SENDER), conn, docs, NOW)
    assert isinstance(results[1], Malformed)
    outcomes = [r.status for r in results if isinstance(r, service.Submitted)]
    assert outcomes == ["queued", "rejected", "queued"]
    assert [r.sequence for r in store.queued(conn)] == [1, 2]
    assert not conn.in_transaction


def test_submit_reports_the_granted_recipients(world: World, tmp_path: Path) -> None:
    """A queued event names the recipients routing granted and carries the applied agreement."""
    conn = node(tmp_path, SENDER)
    result = submit(world, conn, event())
    assert result == service.Submitted(result.event_id, "queued", recipients=result.recipients)
    assert RECIPIENT in result.recipients
    verified = sealing.verify(
        envelope_of(conn, result.event_id), world.directory, NOW, world.max_age, schemas=world.schemas
    )
    assert verified.header.agreement_id == "TH-KH"


def test_submit_uses_a_given_event_id(world: World, tmp_path: Path) -> None:
    """The hub may choose the event id; the outbox row is stored under it."""
    conn = node(tmp_path, SENDER)
    chosen = str(uuid.uuid4())
    assert submit(world, conn, event(event_id=chosen)).event_id == chosen
    assert store.outbox_row(conn, chosen) is not None


def test_refused_event_is_kept_as_rejected(world: World, tmp_path: Path) -> None:
    """An event the agreement does not allow (return plan to KH.CCPCR) is kept as rejected with its code."""
    conn = node(tmp_path, SENDER)
    result = submit(world, conn, event(to=("KH.CCPCR",)))
    assert (result.status, result.code) == ("rejected", "recipient_not_permitted")
    row = store.outbox_row(conn, result.event_id)
    assert row is not None
    assert (row.status, row.reason, row.envelope, row.sequence) == ("rejected", result.code, None, 0)
    assert store.chain_head(conn, service.partition_of("case-7f3a", 6)) == (0, b"")
    assert store.queued(conn) == []


def test_payload_that_does_not_fit_is_rejected_as_schema_invalid(world: World, tmp_path: Path) -> None:
    """A payload with an unknown field is kept as rejected with schema_invalid; the chain is untouched."""
    conn = node(tmp_path, SENDER)
    doc = event(payload={"operational": {"no_such_field": 1}})
    result = submit(world, conn, doc)
    assert (result.status, result.code) == ("rejected", "schema_invalid")
    assert "no_such_field" in (result.why or "")
    assert store.chain_head(conn, service.partition_of("case-7f3a", 6)) == (0, b"")


def consent(scopes: Any, event_type: str = "consent.recorded") -> dict[str, Any]:
    """A domestic consent event (consent.* never leaves the sender's country)."""
    return event(event_type, to=("TH",), consent_scopes=scopes)


def test_recorded_consent_is_remembered_and_widens_routing(world: World, tmp_path: Path) -> None:
    """After consent.recorded for ngo_sharing, the node's next return plan also reaches the NGO."""
    conn = node(tmp_path, SENDER)
    before = submit(world, conn, event())
    assert submit(world, conn, consent(["ngo_sharing"])).status == "queued"
    after = submit(world, conn, event())
    assert "KH.CWCC" not in before.recipients
    assert "KH.CWCC" in after.recipients
    assert store.load_case_state(conn, "case-7f3a") == {"consent": ["ngo_sharing"], "witness_hold": False}
    header = sealing.verify(
        envelope_of(conn, after.event_id), world.directory, NOW, world.max_age, schemas=world.schemas
    ).header
    assert header.consent_scopes == ("ngo_sharing",)


def test_withdrawn_consent_is_forgotten(world: World, tmp_path: Path) -> None:
    """consent.withdrawn removes the scope from the node's view of the case."""
    conn = node(tmp_path, SENDER)
    submit(world, conn, consent(["ngo_sharing", "family_tracing"]))
    submit(world, conn, consent(["ngo_sharing"], "consent.withdrawn"))
    assert store.load_case_state(conn, "case-7f3a")["consent"] == ["family_tracing"]


def test_consent_scopes_given_as_a_string_are_refused(world: World, tmp_path: Path) -> None:
    """consent_scopes must be a list of scope names, like ``to``; a bare string is not accepted."""
    conn = node(tmp_path, SENDER)
    try:
        result = submit(world, conn, consent("ngo_sharing"))
    except Malformed:
        return
    assert result.status == "rejected"
    assert store.load_case_state(conn, "case-7f3a") == {}


@pytest.mark.parametrize(
    "doc",
    [
        {"event_type": "no.such_type", "case_ref": "c", "to": ["KH"]},
        {"event_type": "return_plan.proposed", "case_ref": "", "to": ["KH"]},
        {"event_type": "return_plan.proposed", "to": ["KH"]},
        {"event_type": "return_plan.proposed", "case_ref": "c", "to": "KH"},
        {"event_type": "return_plan.proposed", "case_ref": "c", "to": [1]},
        {"event_type": "return_plan.proposed", "case_ref": "c", "to": ["KH"], "payload": []},
        {"event_type": "return_plan.proposed", "case_ref": "c", "to": ["KH"], "handling_code": "H9"},
    ],
    ids=[
        "event type",
        "empty case",
        "no case",
        "to not a list",
        "to not strings",
        "payload",
        "handling code",
    ],
)
def test_malformed_json_events_raise(world: World, tmp_path: Path, doc: dict[str, Any]) -> None:
    """A JSON event of the wrong shape raises Malformed and leaves the store unchanged."""
    conn = node(tmp_path, SENDER)
    with pytest.raises(Malformed):
        submit(world, conn, doc)
    assert conn.execute("SELECT COUNT(*) FROM outbox").fetchone() == (0,)


def test_receive_stores_once_and_queues_one_receipt(world: World, tmp_path: Path) -> None:
    """An envelope sealed for the node is stored once; a second copy is a duplicate; one receipt is queued."""
    _, event_id, data = sent_to_recipient(world, tmp_path)
    conn = node(tmp_path, RECIPIENT)
    first = service.receive(world, world.identity(RECIPIENT), conn, data, NOW)
    second = service.receive(world, world.identity(RECIPIENT), conn, data, NOW + timedelta(seconds=5))
    assert (first.event_id, first.outcome) == (event_id, "stored")
    assert (second.event_id, second.outcome) == (event_id, "duplicate")
    assert queued_types(conn) == ["receipt.delivered"]
    record = store.inbox_record(conn, event_id)
    assert record is not None
    assert (record["sender"], record["event_type"]) == (SENDER, "return_plan.proposed")
    assert "operational" in record["categories"]


def test_receive_many_stores_a_batch_in_one_transaction(world: World, tmp_path: Path) -> None:
    """A batch with an event, its duplicate and garbage: stored once, duplicate, quarantined."""
    _, event_id, data = sent_to_recipient(world, tmp_path)
    conn = node(tmp_path, RECIPIENT)
    outcomes = service.receive_many(world, world.identity(RECIPIENT), conn, [data, data, b"junk"], NOW)
    assert [(o.event_id, o.outcome) for o in outcomes] == [
        (event_id, "stored"), (event_id, "duplicate"), (None, "quarantined")
    ]
    assert queued_types(conn) == ["receipt.delivered"]
    assert not conn.in_transaction


def test_receive_many_keeps_the_batch_order_in_the_inbox(world: World, tmp_path: Path) -> None:
    """Events stored in one batch come back from the inbox in the order they were read."""
    sender = node(tmp_path, SENDER)
    ids = [submit(world, sender, event()).event_id for _ in range(8)]
    conn = node(tmp_path, RECIPIENT)
    batch = [envelope_of(sender, event_id) for event_id in ids]
    service.receive_many(world, world.identity(RECIPIENT), conn, batch, NOW)
    assert [e["event_id"] for e in store.inbox_page(conn, "", 50)] == ids


def test_delivered_receipt_names_the_event_and_its_hash(world: World, tmp_path: Path) -> None:
    """The queued receipt.delivered answers the event (correlation id) and goes back to its sender."""
    _, event_id, data = sent_to_recipient(world, tmp_path)
    conn = node(tmp_path, RECIPIENT)
    service.receive(world, world.identity(RECIPIENT), conn, data, NOW)
    (receipt,) = store.queued(conn)
    assert receipt.recipients == (SENDER,)
    opened = sealing.open(
        receipt.envelope or b"",
        world.identity(SENDER),
        world.directory,
        NOW,
        world.max_age,
        schemas=world.schemas,
    )
    assert opened.header.correlation_id == event_id
    assert opened.payload["operational"]["for_event_id"] == event_id
    assert opened.payload["operational"]["envelope_hash"] == sealing.envelope_hash(data)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "malformed"),
        (b"not an envelope at all", "malformed"),
        (b"\xc3\x01" + b"\x00" * 8 + b"x", "unknown_schema"),
    ],
)
def test_receive_of_garbage_is_quarantined(world: World, tmp_path: Path, data: bytes, code: str) -> None:
    """Bytes that do not verify are quarantined with their code and nothing else is stored."""
    conn = node(tmp_path, RECIPIENT)
    outcome = service.receive(world, world.identity(RECIPIENT), conn, data, NOW)
    assert (outcome.event_id, outcome.outcome, outcome.code) == (None, "quarantined", code)
    assert conn.execute("SELECT code, envelope FROM quarantine").fetchall() == [(code, data)]
    assert conn.execute("SELECT COUNT(*) FROM inbox").fetchone() == (0,)
    assert store.queued(conn) == []


def test_receive_of_an_envelope_not_for_the_node_is_quarantined(world: World, tmp_path: Path) -> None:
    """An envelope with no key wrapped for this participant is quarantined, not stored."""
    _, _, data = sent_to_recipient(world, tmp_path)
    conn = node(tmp_path, "LA.MOLSW")
    outcome = service.receive(world, world.identity("LA.MOLSW"), conn, data, NOW)
    assert outcome.outcome == "quarantined"
    assert conn.execute("SELECT COUNT(*) FROM quarantine").fetchone() == (1,)


def test_receipts_move_our_status_forward_never_back(world: World, tmp_path: Path) -> None:
    """delivered then processed receipts advance our event; a late delivered one does not undo it."""
    sender, event_id, data = sent_to_recipient(world, tmp_path)
    me = world.identity(SENDER)
    conn = node(tmp_path, RECIPIENT)
    service.receive(world, world.identity(RECIPIENT), conn, data, NOW)
    (delivered,) = store.queued(conn)
    processed = service.mark_processed(world, world.identity(RECIPIENT), conn, event_id, NOW)
    assert processed is not None
    statuses = []
    for envelope in (delivered.envelope, envelope_of(conn, processed.event_id), delivered.envelope):
        outcome = service.receive(world, me, sender, envelope or b"", NOW)
        assert outcome.outcome == "receipt"
        statuses.append(service.status_of(sender, event_id)["status"])  # type: ignore[index]
    assert statuses == ["delivered", "processed", "processed"]
    assert sender.execute("SELECT COUNT(*) FROM outbox").fetchone() == (1,)  # no receipt for a receipt
    kinds = {r["kind"] for r in service.status_of(sender, event_id)["receipts"]}  # type: ignore[index]
    assert kinds == {"delivered", "processed"}


def test_mark_processed_queues_one_receipt(world: World, tmp_path: Path) -> None:
    """Marking an inbox event processed queues receipt.processed once; again, or unknown, is None."""
    _, event_id, data = sent_to_recipient(world, tmp_path)
    me = world.identity(RECIPIENT)
    conn = node(tmp_path, RECIPIENT)
    service.receive(world, me, conn, data, NOW)
    result = service.mark_processed(world, me, conn, event_id, NOW)
    assert result is not None and result.status == "queued"
    assert service.mark_processed(world, me, conn, event_id, NOW) is None
    assert service.mark_processed(world, me, conn, "no-such-event", NOW) is None
    assert queued_types(conn) == ["receipt.delivered", "receipt.processed"]
    assert [r.sequence for r in store.queued(conn)] == [1, 2]


def test_inbox_page_pages_received_events(world: World, tmp_path: Path) -> None:
    """Received events come back a page at a time, the cursor continuing after the last one."""
    sender = node(tmp_path, SENDER)
    conn = node(tmp_path, RECIPIENT)
    me = world.identity(RECIPIENT)
    ids = []
    for i in range(5):
        result = submit(world, sender, event())
        service.receive(world, me, conn, envelope_of(sender, result.event_id), NOW + timedelta(seconds=i))
        ids.append(result.event_id)
    pages: list[list[str]] = []
    cursor = ""
    while page := store.inbox_page(conn, cursor, limit=2):
        pages.append([r["event_id"] for r in page])
        cursor = store.page_cursor(page) or ""
    assert pages == [ids[0:2], ids[2:4], ids[4:5]]


def test_status_of_unknown_event(world: World, tmp_path: Path) -> None:
    """An event neither sent nor named by a receipt has no status."""
    assert service.status_of(node(tmp_path, SENDER), "nothing") is None


def rejection(world: World, refused: str, case_ref: str, envelope_hash: bytes) -> bytes:
    """The router's signed receipt.rejected for ``refused``, naming ``envelope_hash``."""
    header = Header(event_id=str(uuid.uuid4()), event_type="receipt.rejected", sender="REG.ROUTER",
                    sender_key_id="", created_at=NOW, case_ref=case_ref, to=(SENDER,), handling_code="H0",
                    correlation_id=refused)
    payload = {"operational": {"for_event_id": refused, "envelope_hash": envelope_hash, "at": NOW,
                               "code": "sender_topic_mismatch", "why": "copied", "note": None}}
    return sealing.seal(header, payload, world.identity("REG.ROUTER"), {SENDER: frozenset({"operational"})},
                        world.directory, NOW, schemas=world.schemas)


@pytest.mark.parametrize(
    ("named", "status"), [("other", "queued"), ("ours", "rejected"), ("none", "rejected")]
)
def test_a_rejection_of_another_envelope_leaves_our_event_alone(
    world: World, tmp_path: Path, named: str, status: str
) -> None:
    """A receipt.rejected naming the hash of an envelope we did not publish (a copy in someone
    else's outbox) is ignored; one naming ours, or no hash, rejects our event."""
    conn, event_id, data = sent_to_recipient(world, tmp_path)
    digest = {"other": bytes(32), "ours": sealing.envelope_hash(data), "none": b""}[named]
    receipt = rejection(world, event_id, "case-7f3a", digest)
    outcome = service.receive(world, world.identity(SENDER), conn, receipt, NOW)
    assert outcome.outcome == ("receipt_ignored" if named == "other" else "receipt")
    assert service.status_of(conn, event_id)["status"] == status  # type: ignore[index]
