"""The router's step in a federation (one cluster per country), driven without a broker.

TH's router forwards what it accepted for KH's participants to the corridor ``cb.xb.TH.KH``; KH's
router reads that corridor (copied by KH's MirrorMaker), checks every record again and delivers to
KH's own inboxes only.
"""

from __future__ import annotations

from dataclasses import replace

from casebridge.core import issued, sealing, topics
from casebridge.core.stream import Record, Step, Tables
from casebridge.router import state as tables
from casebridge.router.step import Ctx, step
from tests.unit.test_relay import CASE, NOW, make_header, sealed, world
from tests.unit.test_router_step import decoded, fresh, record

CORRIDOR = "cb.xb.TH.KH"
SCOPES = b"family_tracing,ngo_sharing,origin_notification"


def at(country: str) -> Ctx:
    w = world()
    return Ctx(replace(w.context(NOW), country=country), w.identity(issued.ROUTER))


def run(state: Tables, topic: str, data: bytes, country: str, offset: int = 10) -> Step:
    """A corridor record carries the case's consent as the origin knows it (here: every scope)."""
    rec = record(data, offset=offset, topic=topic)
    if topics.corridor_ends(topic) is not None:
        rec = Record(rec.topic, rec.partition, rec.offset, rec.key, rec.value, (("cb_case_consent", SCOPES),))
    return step(state, rec, at(country))


def test_the_origin_router_forwards_foreign_recipients_once_per_country_through_the_corridor() -> None:
    """TH.MSDHS -> KH.MOSVY, KH.CWCC on TH's cluster: one copy of the unchanged bytes on cb.xb.TH.KH
    (no cb.in.KH.* topic on TH's cluster), audited "forwarded" with KH's recipients."""
    data = sealed(make_header())
    result = run(fresh(), topics.outbox("TH.MSDHS"), data, "TH")
    assert [o.topic for o in result.outgoing if o.topic != topics.AUDIT] == [CORRIDOR]
    [copy] = [o for o in result.outgoing if o.topic == CORRIDOR]
    assert (copy.key, copy.value) == (CASE.encode(), data)
    [audit] = decoded(result, topics.AUDIT, issued.AUDIT)
    assert (audit["outcome"], audit["recipients"]) == ("forwarded", ["KH.CWCC", "KH.MOSVY"])
    assert {c.kind for c in result.changes} == {"e", "s"}  # the sender's chain moved on here


def test_local_recipients_are_delivered_and_foreign_ones_forwarded() -> None:
    """TH.RTP's answer to KH also goes to TH.MSDHS (domestic): an inbox copy for TH.MSDHS, the
    corridor for KH.MOSVY."""
    header = make_header("nationality_verification.responded", sender="TH.RTP")
    data = sealed(header)
    result = run(fresh(), topics.outbox("TH.RTP"), data, "TH")
    delivered = {o.topic for o in result.outgoing if o.topic.startswith(topics.IN_PREFIX)}
    assert delivered == {"cb.in.TH.MSDHS"}
    assert CORRIDOR in {o.topic for o in result.outgoing}
    outcomes = sorted(a["outcome"] for a in decoded(result, topics.AUDIT, issued.AUDIT))
    assert outcomes == ["delivered", "forwarded"]


def test_the_destination_router_delivers_a_corridor_record_to_its_own_participants_only() -> None:
    """On KH's cluster the corridor record is checked again and delivered to KH's inboxes; it is
    never forwarded on (no transit)."""
    data = sealed(make_header())
    result = run(fresh(), CORRIDOR, data, "KH")
    assert result.outcome == "delivered"
    inboxes = sorted(o.topic for o in result.outgoing if o.topic != topics.AUDIT)
    assert inboxes == ["cb.in.KH.CWCC", "cb.in.KH.MOSVY"]
    [audit] = decoded(result, topics.AUDIT, issued.AUDIT)
    assert (audit["outcome"], audit["topic"]) == ("delivered", CORRIDOR)


def test_a_corridor_record_signed_in_another_country_is_quarantined_without_a_rejection() -> None:
    """A VN envelope on the TH->KH corridor (forged by whoever writes TH's corridor): quarantined
    sender_topic_mismatch at KH, and no receipt goes to anyone."""
    header = make_header(sender="VN.MOLISA", to=("KH",))
    data = sealed(header, {"KH.MOSVY": frozenset({"operational"})})
    result = run(fresh(), CORRIDOR, data, "KH")
    [kept] = decoded(result, topics.QUARANTINE, issued.QUARANTINED)
    assert (kept["code"], kept["original"]) == ("sender_topic_mismatch", data)
    assert not [o for o in result.outgoing if o.topic.startswith((topics.IN_PREFIX, topics.XB_PREFIX))]


def test_a_corridor_for_another_country_is_refused() -> None:
    """KH's router given the TH->LA corridor (a misconfigured mirror) delivers nothing from it."""
    data = sealed(make_header())
    result = run(fresh(), "cb.xb.TH.LA", data, "KH")
    [kept] = decoded(result, topics.QUARANTINE, issued.QUARANTINED)
    assert kept["code"] == "sender_topic_mismatch"


def test_a_corridor_record_refused_at_the_destination_is_rejected_back_through_the_reverse_corridor() -> None:
    """Refused at KH (also sealed for KH.MOI, whom TH-KH does not grant a return plan), the signed
    receipt.rejected goes to its signer TH.MSDHS through cb.xb.KH.TH."""
    header = make_header(sequence=1)
    data = sealed(header, {"KH.MOSVY": frozenset({"operational"}), "KH.MOI": frozenset({"operational"})})
    result = run(fresh(), CORRIDOR, data, "KH")
    [kept] = decoded(result, topics.QUARANTINE, issued.QUARANTINED)
    assert kept["code"] == "recipient_not_permitted"
    [receipt] = [o for o in result.outgoing if o.topic.startswith(topics.XB_PREFIX)]
    assert receipt.topic == "cb.xb.KH.TH"


def test_the_routers_rejection_back_through_a_corridor_is_delivered_to_its_addressee() -> None:
    """TH's router delivers KH's router rejection (signed REG.ROUTER, to TH.MSDHS) to cb.in.TH.MSDHS."""
    refused = make_header()
    w = world()
    receipt_header, data = issued.rejection(w.schemas, w.directory, w.identity(issued.ROUTER), refused,
                                            "TH.MSDHS", sealing.envelope_hash(b"x"), "no_agreement",
                                            "test", NOW)
    result = run(fresh(), "cb.xb.KH.TH", data, "TH")
    assert result.outcome == "delivered"
    assert [o.topic for o in result.outgoing if o.topic != topics.AUDIT] == ["cb.in.TH.MSDHS"]
    assert receipt_header.case_ref == CASE


def test_a_corridor_carries_part_of_a_chain_so_a_gap_there_is_not_flagged() -> None:
    """Sequences 1 then 5 of TH.MSDHS arrive at KH (2-4 went elsewhere): delivered, unflagged; a
    link older than the head is flagged."""
    state = fresh()
    for n, offset in ((1, 10), (5, 11)):
        result = run(state, CORRIDOR, sealed(make_header(sequence=n)), "KH", offset)
        [audit] = decoded(result, topics.AUDIT, issued.AUDIT)
        assert (audit["outcome"], audit["flags"]) == ("delivered", [])
        state.apply(result.changes)
    late = run(state, CORRIDOR, sealed(make_header(sequence=3)), "KH", 12)
    [audit] = decoded(late, topics.AUDIT, issued.AUDIT)
    assert audit["flags"] == ["sequence_gap"]


def test_the_same_corridor_record_mirrored_twice_is_delivered_once() -> None:
    """MirrorMaker's at-least-once copy of a corridor record at a later offset: a duplicate, no output."""
    data = sealed(make_header())
    state = fresh()
    state.apply(run(state, CORRIDOR, data, "KH").changes)
    again = run(state, CORRIDOR, data, "KH", offset=11)
    assert (again.outcome, again.outgoing) == ("duplicate", ())


def test_a_forward_carries_the_cases_consent_as_the_origin_knows_it() -> None:
    """Consent is recorded where the victim is and stays there; the corridor copy names the
    scopes TH's router holds for the case."""
    result = run(fresh(), topics.outbox("TH.MSDHS"), sealed(make_header()), "TH")
    [copy] = [o for o in result.outgoing if o.topic == CORRIDOR]
    assert dict(copy.headers)["cb_case_consent"] == b"family_tracing,ngo_sharing,origin_notification"


def corridor_record(data: bytes, consent: bytes | None, offset: int = 10) -> Record:
    headers = () if consent is None else (("cb_case_consent", consent),)
    return Record(CORRIDOR, 2, offset, CASE.encode(), data, headers)


def test_the_destination_routes_a_corridor_record_with_the_origins_consent() -> None:
    """origin.notified needs consent to notify the origin: KH's router, which never sees TH's
    consent.recorded, delivers it with the scopes the corridor copy carries and refuses it without
    them (deny by default)."""
    data = sealed(make_header("origin.notified"), {"KH.MOSVY": frozenset({"operational", "identity"})})
    refused = step(tables.new_tables(), corridor_record(data, None), at("KH"))
    [kept] = decoded(refused, topics.QUARANTINE, issued.QUARANTINED)
    assert kept["code"] == "consent_missing"
    delivered = step(tables.new_tables(), corridor_record(data, b"origin_notification"), at("KH"))
    assert [o.topic for o in delivered.outgoing if o.topic != topics.AUDIT] == ["cb.in.KH.MOSVY"]


def test_the_consent_learnt_from_a_corridor_routes_the_destinations_own_answer() -> None:
    """After a corridor record carrying family_tracing, KH.MOSVY's family assessment back to TH
    (which needs that consent) passes KH's router and goes to cb.xb.KH.TH."""
    state = tables.new_tables()
    request = sealed(make_header("family_tracing.requested"), {"KH.MOSVY": frozenset({"operational"})})
    state.apply(step(state, corridor_record(request, b"family_tracing"), at("KH")).changes)
    answer = make_header("family_assessment.completed", sender="KH.MOSVY", to=("TH",))
    data = sealed(answer, {"TH.MSDHS": frozenset({"operational"})})
    result = run(state, topics.outbox("KH.MOSVY"), data, "KH")
    assert "cb.xb.KH.TH" in {o.topic for o in result.outgoing}, result.summary
