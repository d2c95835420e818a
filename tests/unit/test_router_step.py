"""The router's pure step (``casebridge.router.step``) and its typed state, driven without a broker."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest

from casebridge.core import avro, issued, sealing, topics
from casebridge.core.model import CaseState
from casebridge.core.relay import Accepted, Position, SenderState
from casebridge.core.stream import Change, Record, Step, Tables
from casebridge.router import state as tables
from casebridge.router.step import Ctx, expire, step
from tests.unit.test_relay import CASE, NGO_OK, NOW, make_header, sealed, world

OUTBOX = "cb.out.TH.MSDHS"


def ctx(**over: object) -> Ctx:
    w = world()
    return Ctx(w.context(NOW), w.identity(issued.ROUTER), **over)  # type: ignore[arg-type]


def fresh(case: CaseState = NGO_OK) -> Tables:
    state = tables.new_tables()
    state["c"][CASE] = case
    return state


def record(data: bytes, offset: int = 10, topic: str = OUTBOX, key: bytes | None = CASE.encode()) -> Record:
    return Record(topic, 2, offset, key, data)


def run(state: Tables, rec: Record, c: Ctx | None = None) -> Step:
    return step(state, rec, c or ctx())


def decoded(result: Step, topic: str, name: str) -> list[dict[str, object]]:
    return [avro.decode(world().schemas, o.value or b"", name) for o in result.outgoing if o.topic == topic]


def test_an_accepted_envelope_goes_unchanged_to_each_recipient_with_an_audit_record() -> None:
    """Accepted: the exact bytes to each granted inbox with ce_* headers, one audit record."""
    data = sealed(make_header())
    result = run(fresh(), record(data))
    inboxes = [o for o in result.outgoing if o.topic.startswith(topics.IN_PREFIX)]
    assert result.outcome == "delivered"
    assert {o.topic for o in inboxes} == {"cb.in.KH.MOSVY", "cb.in.KH.CWCC"}  # what TH-KH grants
    assert all(o.value == data and o.key == CASE.encode() for o in inboxes)
    assert dict(inboxes[0].headers)["ce_type"] == b"return_plan.proposed"
    [audit] = decoded(result, topics.AUDIT, issued.AUDIT)
    assert (audit["outcome"], audit["partition"], audit["offset"]) == ("delivered", 2, 10)


def test_an_accepted_envelope_changes_the_seen_ids_and_the_senders_chain_head() -> None:
    """The step returns the changes: the event id where accepted, the new head of the sender's chain."""
    header = make_header()
    data = sealed(header)
    result = run(fresh(), record(data))
    changes = {c.kind: c for c in result.changes}
    assert changes["e"].key == header.event_id
    seen = changes["e"].value
    assert isinstance(seen, tables.Seen) and seen.accepted.position == Position(OUTBOX, 2, 10)
    assert changes["s"].value == SenderState(1, sealing.envelope_hash(data))
    assert "c" not in changes  # the case's flags did not change: no changelog record


def test_the_same_bytes_again_are_a_duplicate_with_no_output() -> None:
    """A retransmission of bytes accepted before yields nothing to produce and no change."""
    data = sealed(make_header())
    state = fresh()
    state.apply(run(state, record(data)).changes)
    again = run(state, record(data, offset=11))
    assert (again.outcome, again.outgoing, again.changes) == ("duplicate", (), ())


def test_a_copy_in_another_outbox_is_refused_and_the_rejection_goes_to_who_wrote_it() -> None:
    """An envelope of TH.MSDHS written to cb.out.TH.RTP: quarantined sender_topic_mismatch, and the
    signed receipt.rejected goes to TH.RTP (the writer), not to TH.MSDHS, whose record stays."""
    data = sealed(make_header())
    result = run(fresh(), record(data, topic="cb.out.TH.RTP"))
    [kept] = decoded(result, topics.QUARANTINE, issued.QUARANTINED)
    assert (kept["code"], kept["original"]) == ("sender_topic_mismatch", data)
    assert [o.topic for o in result.outgoing if o.topic.startswith(topics.IN_PREFIX)] == ["cb.in.TH.RTP"]
    assert result.changes == ()


def test_the_rejection_names_the_hash_of_the_bytes_refused() -> None:
    """The receipt.rejected carries the refused bytes' hash, so a sender can tell a copy from its own."""
    data = sealed(make_header())
    result = run(fresh(), record(data, topic="cb.out.TH.RTP"))
    [receipt] = [o for o in result.outgoing if o.topic == "cb.in.TH.RTP"]
    w = world()
    opened = sealing.open(receipt.value or b"", w.identity("TH.RTP"), w.directory, NOW, w.max_age,
                          schemas=w.schemas)
    assert opened.payload["operational"]["envelope_hash"] == sealing.envelope_hash(data)


def test_unverifiable_bytes_are_quarantined_without_a_receipt() -> None:
    """Garbage is kept with its code and audited; nobody named in unverified bytes is told."""
    result = run(fresh(), record(b"\xc3\x01garbage"))
    [kept] = decoded(result, topics.QUARANTINE, issued.QUARANTINED)
    assert kept["code"] == "malformed"
    assert not [o for o in result.outgoing if o.topic.startswith(topics.IN_PREFIX)]


def test_a_record_too_large_to_keep_whole_is_kept_oversized_with_its_hash_and_first_bytes() -> None:
    """1,048,450 bytes of garbage: its quarantine copy would pass Kafka's limit, so it is kept
    oversized, its first 64 KiB with its size and SHA-256, and every output fits."""
    garbage = b"\xc3\x01" + bytes(1_048_448)
    result = run(fresh(), record(garbage))
    [kept] = decoded(result, topics.QUARANTINE, issued.QUARANTINED)
    assert kept["code"] == "oversized"
    assert kept["original"] == garbage[: issued.KEPT_ORIGINAL]
    assert kept["original_size"] == len(garbage)
    assert kept["original_sha256"] == hashlib.sha256(garbage).digest()
    assert all(o.size <= ctx().max_record_bytes for o in result.outgoing)


def test_a_valid_envelope_with_a_huge_case_reference_is_kept_oversized_and_nothing_else_blocks() -> None:
    """A 400,000-character case reference: its delivery cannot be produced, so it is quarantined
    oversized (key not copied), with an audit record that fits and no delivery."""
    huge = "C" * 400_000
    data = sealed(make_header(case_ref=huge))
    state = fresh()
    state["c"][huge] = NGO_OK
    result = run(state, record(data, key=huge.encode()))
    assert result.outcome == "quarantined" and result.log["code"] == "oversized"
    assert not [o for o in result.outgoing if o.topic.startswith(topics.IN_PREFIX)]
    assert all(o.key is None and o.size <= ctx().max_record_bytes for o in result.outgoing)


def test_a_record_kafka_refused_is_quarantined_oversized_on_the_next_try() -> None:
    """A position the loop marked as refused by Kafka gets the oversized outcome, whatever it holds."""
    data = sealed(make_header())
    result = run(fresh(), record(data), ctx(poison=frozenset({(OUTBOX, 2, 10)})))
    assert result.log["code"] == "oversized" and result.changes == ()


def test_withheld_consent_changes_the_case_flags_in_the_state() -> None:
    """A consent.withdrawn event changes the case's consent in the partition's state."""
    header = make_header("consent.withdrawn", to=("TH",), consent_scopes=("ngo_sharing",), handling_code="H0")
    result = run(fresh(), record(sealed(header)))
    [case] = [c for c in result.changes if c.kind == "c"]
    assert case.value == CaseState(NGO_OK.consent - {"ngo_sharing"})


@pytest.mark.parametrize(
    "change",
    [
        Change("e", "ev-1", tables.Seen(Accepted(Position(OUTBOX, 3, 9), b"\x01\x02"), NOW)),
        Change("s", "TH.MSDHS", SenderState(7, b"\xff" * 32)),
        Change("c", CASE, CaseState(frozenset({"ngo_sharing"}), True)),
        Change("e", "ev-2", None),
    ],
)
def test_state_changes_round_trip_through_the_changelog(change: Change) -> None:
    """Every typed change encodes to a changelog record (None: a tombstone) and decodes back."""
    assert tables.decode(*tables.encode(change)) == change


def test_a_layer_keeps_a_batchs_changes_apart_until_they_are_applied() -> None:
    """A batch's view sees its own changes; the state itself changes only when they are applied."""
    base = fresh()
    view = base.layer()
    change = Change("s", "TH.MSDHS", SenderState(3, b"h"))
    view.apply([change])
    assert view["s"]["TH.MSDHS"] == SenderState(3, b"h") and "TH.MSDHS" not in base["s"]
    base.apply([change])
    assert base["s"]["TH.MSDHS"] == SenderState(3, b"h")


def test_a_layer_reads_through_to_its_table_and_hides_what_the_batch_deleted() -> None:
    """A batch's view: its writes shadow the table, a deletion hides the key, the table is untouched."""
    base = fresh()
    base["e"].update({"a": 1, "b": 2})
    view = base.layer()
    view.apply([Change("e", "b", None), Change("e", "c", 3)])
    assert (view["e"].get("a"), view["e"].get("b"), view["e"].get("c")) == (1, None, 3)
    assert "b" not in view["e"] and sorted(view["e"]) == ["a", "c"] and len(view["e"]) == 2
    with pytest.raises(KeyError):
        view["e"]["b"]
    assert base["e"] == {"a": 1, "b": 2}


def test_event_ids_are_forgotten_once_their_envelopes_are_stale() -> None:
    """The sweep deletes event ids older than the freshness window (plus an hour), and only those."""
    state = fresh()
    old = tables.Seen(Accepted(Position(OUTBOX, 2, 1)), NOW - timedelta(days=8))
    new = tables.Seen(Accepted(Position(OUTBOX, 2, 2)), NOW - timedelta(days=1))
    state["e"].update({"old": old, "new": new})
    result = expire(state, 2, ctx())
    assert result.changes == (Change("e", "old", None),)
    state.apply(result.changes)
    assert set(state["e"]) == {"new"}
