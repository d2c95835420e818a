"""The deadline tracker's pure steps (``casebridge.deadlines.step``) over audit records and ticks."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from casebridge.core import avro, issued, topics
from casebridge.core.stream import Record, Tables
from casebridge.deadlines import step as tracker
from tests.unit.test_relay import NOW, make_header, world
from tests.unit.test_tracker import calendars

REQUEST = "nationality_verification.requested"


def ctx(now_offset: timedelta = timedelta(0), scale: float = 1.0) -> tracker.Ctx:
    w = world()
    return tracker.Ctx(w.schemas, w.directory, {a.id: a for a in w.agreements}, calendars(), scale,
                       w.identity(issued.TRACKER), NOW + now_offset)


def delivered(event_type: str = REQUEST, **over: object) -> Record:
    header = make_header(event_type, agreement_id="TH-KH", **over)  # type: ignore[arg-type]
    data = issued.audit_record(world().schemas, header, b"h", ("cb.out.TH.MSDHS", 0, 3), "delivered", None,
                               ("KH.MOSVY",), (), NOW)
    return Record(topics.AUDIT, 1, 7, header.case_ref.encode(), data), header  # type: ignore[return-value]


def test_a_delivered_request_opens_an_obligation_in_the_cases_table() -> None:
    """A delivered nationality verification request opens one obligation on KH (a table change)."""
    record, header = delivered()  # type: ignore[misc]
    result = tracker.step(tracker.new_tables(), record, ctx())
    [change] = result.changes
    assert (change.kind, change.key) == ("o", header.case_ref)
    assert [t.obligation.party for t in change.value] == ["KH"]


def test_records_that_open_nothing_change_nothing() -> None:
    """A quarantine audit record, or an event that opens no obligation, yields no change."""
    w = world()
    refused = issued.audit_record(w.schemas, None, None, ("cb.out.TH.MSDHS", 0, 4), "quarantined",
                                  "bad_signature", (), (), NOW)
    tables = tracker.new_tables()
    assert tracker.step(tables, Record(topics.AUDIT, 0, 1, None, refused), ctx()).changes == ()
    record, _ = delivered("followup.recorded")  # type: ignore[misc]
    assert tracker.step(tables, record, ctx()).changes == ()


def test_a_tick_after_the_due_time_sends_a_signed_breach_and_marks_it_sent() -> None:
    """Past the due time, a tick yields sla.breached to KH's focal point and the secretariat, an
    audit record, and the obligation flagged as breached; the next tick sends nothing more."""
    record, header = delivered()  # type: ignore[misc]
    tables: Tables = tracker.new_tables()
    tables.apply(tracker.step(tables, record, ctx(scale=0.01)).changes)  # a shortened clock
    [tracked] = tables["o"][header.case_ref]
    late = ctx(tracked.due - NOW + timedelta(minutes=1), scale=0.01)
    result = tracker.tick(tables, 1, late)
    inboxes = sorted(o.topic for o in result.outgoing if o.topic.startswith(topics.IN_PREFIX))
    assert inboxes == ["cb.in.KH.MOSVY", "cb.in.REG.SECRETARIAT"]
    assert all(dict(o.headers)["ce_type"] == b"sla.breached" for o in result.outgoing if o.headers)
    [audit] = [avro.decode(world().schemas, o.value or b"", issued.AUDIT)
               for o in result.outgoing if o.topic == topics.AUDIT]
    assert (audit["outcome"], audit["correlation_id"]) == ("sla.breached", header.event_id)
    tables.apply(result.changes)
    assert tracker.tick(tables, 1, late).outgoing == ()


def test_the_obligations_round_trip_through_the_changelog() -> None:
    """A case's obligations encode to one changelog record and decode to the same values."""
    record, _ = delivered()  # type: ignore[misc]
    [change] = tracker.step(tracker.new_tables(), record, ctx()).changes
    assert tracker.decode(*tracker.encode(change)) == change


def federated(country: str, now_offset: timedelta = timedelta(0), scale: float = 1.0) -> tracker.Ctx:
    return replace(ctx(now_offset, scale), country=country)


def test_in_a_federation_each_country_keeps_only_its_own_obligations() -> None:
    """TH's tracker ignores the obligation a request puts on KH (KH's tracker keeps it): none is
    tracked twice."""
    record, _ = delivered()  # type: ignore[misc]
    assert tracker.step(tracker.new_tables(), record, federated("TH")).changes == ()
    [change] = tracker.step(tracker.new_tables(), record, federated("KH")).changes
    assert [t.obligation.party for t in change.value] == ["KH"]


def test_in_a_federation_alerts_go_to_the_countrys_own_participants_only() -> None:
    """KH's tracker sends sla.breached to cb.in.KH.MOSVY; the secretariat's copy (another cluster)
    is left to the audit record, which the secretariat mirrors."""
    record, header = delivered()  # type: ignore[misc]
    tables: Tables = tracker.new_tables()
    tables.apply(tracker.step(tables, record, federated("KH", scale=0.01)).changes)
    [tracked] = tables["o"][header.case_ref]
    result = tracker.tick(tables, 1, federated("KH", tracked.due - NOW + timedelta(minutes=1), scale=0.01))
    assert sorted(o.topic for o in result.outgoing) == [topics.AUDIT, "cb.in.KH.MOSVY"]


def test_a_forwarded_answer_closes_the_obligation_it_meets() -> None:
    """An answer accepted here for another country's cluster (audited forwarded) meets the
    obligation the request opened."""
    record, header = delivered()  # type: ignore[misc]
    tables: Tables = tracker.new_tables()
    tables.apply(tracker.step(tables, record, federated("KH")).changes)
    answer = make_header("nationality_verification.responded", sender="KH.MOSVY", agreement_id="TH-KH",
                         to=("TH",), correlation_id=header.event_id, case_ref=header.case_ref)
    data = issued.audit_record(world().schemas, answer, b"h", ("cb.out.KH.MOSVY", 1, 5), "forwarded", None,
                               ("TH.MSDHS",), (), NOW)
    result = tracker.step(tables, Record(topics.AUDIT, 1, 8, answer.case_ref.encode(), data), federated("KH"))
    assert result.outcome == "obligations_changed"
    [change] = result.changes
    assert change.value is None
