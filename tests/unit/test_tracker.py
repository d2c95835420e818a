"""The deadline tracker's logic (``casebridge.core.deadlines``) on the committed TH-KH agreement."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from casebridge.core import deadlines as tracker
from casebridge.core.deadlines import Calendar, obligations, parse_calendars
from casebridge.core.model import Header
from tests.unit.policy_fixtures import AGREEMENTS_DIR, NOW, agreement, header

REQUEST = "nationality_verification.requested"
ANSWER = "nationality_verification.responded"


def calendars() -> dict[str, Calendar]:
    return parse_calendars((AGREEMENTS_DIR / "calendars.yaml").read_text(), "calendars.yaml")


def request(event_id: str = "req-1", sender: str = "TH.MSDHS", to: tuple[str, ...] = ("KH",)) -> Header:
    return header(REQUEST, sender, to, event_id=event_id)


def answer(to_event: str = "req-1", event_type: str = ANSWER, event_id: str = "ans-1") -> Header:
    return header(
        event_type,
        "KH.MOSVY",
        ("TH",),
        event_id=event_id,
        correlation_id=to_event,
        created_at=NOW + timedelta(days=3),
    )


def opened(scale: float = 1.0, event: Header | None = None) -> list[tracker.Tracked]:
    still, closed = tracker.on_delivered(event or request(), agreement("TH-KH"), [], calendars(), scale)
    assert closed == []
    return still


@pytest.mark.parametrize(
    ("sender", "to", "party"),
    [
        ("TH.MSDHS", ("KH",), "KH"),
        ("KH.MOSVY", ("TH",), "TH"),
        ("TH.RTP", ("KH.MOI",), "KH"),
        ("TH.MSDHS", ("TH", "KH"), "KH"),
    ],
)
def test_request_opens_one_obligation_on_the_addressed_counterpart(
    sender: str, to: tuple[str, ...], party: str
) -> None:
    """A verification request opens the deadline on the addressed country only, never the sender's."""
    (tracked,) = opened(event=request(sender=sender, to=to))
    assert tracked.obligation.name == "nationality_verification"
    assert tracked.obligation.party == party
    assert tracked.obligation.closes_on == ANSWER
    assert tracked.obligation.opened_by == "req-1"
    assert tracked.opened_at == NOW
    assert tracked.due == tracked.obligation.due > NOW
    assert (tracked.approaching_sent, tracked.breached_sent) == (False, False)


def test_without_an_agreement_nothing_opens() -> None:
    """An event delivered under no agreement opens no obligation."""
    assert tracker.on_delivered(request(), None, [], calendars()) == ([], [])


def test_the_same_request_delivered_twice_opens_it_once() -> None:
    """A redelivered opening event does not open a second timer for the same obligation."""
    first = opened()
    still, closed = tracker.on_delivered(request(), agreement("TH-KH"), first, calendars())
    assert (still, closed) == (first, [])


def test_the_answering_event_closes_it() -> None:
    """The response carrying the request's id as correlation_id closes the obligation."""
    first = opened()
    still, closed = tracker.on_delivered(answer(), agreement("TH-KH"), first, calendars())
    assert (still, closed) == ([], first)


@pytest.mark.parametrize(
    "event",
    [
        answer(to_event="req-other"),
        answer(event_type="travel_document.issued"),
        replace(answer(), correlation_id=None),
    ],
    ids=["other correlation", "other event type", "no correlation"],
)
def test_an_unrelated_event_does_not_close_it(event: Header) -> None:
    """Only the right event type naming the opening event closes an obligation."""
    first = opened()
    still, closed = tracker.on_delivered(event, agreement("TH-KH"), first, calendars())
    assert (still, closed) == (first, [])


def test_scale_shortens_the_due_time() -> None:
    """A scale of 0.5 halves the time allowed, from the same opening moment."""
    (full,) = opened()
    (half,) = opened(scale=0.5)
    assert half.opened_at == full.opened_at
    assert half.due - NOW == (full.due - NOW) * 0.5
    assert half.obligation == full.obligation  # the agreement's due date is kept for the record


def test_warn_at_is_eighty_percent_of_the_allowed_time() -> None:
    """Approaching is announced after 80 % of the time between opening and due."""
    (tracked,) = opened()
    assert tracked.warn_at == NOW + (tracked.due - NOW) * 0.8


def test_alerts_are_sent_once_each_in_order() -> None:
    """Nothing before 80 %, approaching once at 80 %, breached once at due, then silence."""
    (tracked,) = opened()
    state = [tracked]
    said: list[str] = []
    for moment in (
        NOW,
        tracked.warn_at - timedelta(seconds=1),
        tracked.warn_at,
        tracked.warn_at + timedelta(hours=1),
        tracked.due,
        tracked.due + timedelta(days=2),
    ):
        state, raised = tracker.alerts(state, moment)
        said += [a.kind for a in raised]
    assert said == ["deadline.approaching", "sla.breached"]
    assert (state[0].approaching_sent, state[0].breached_sent) == (True, True)


def test_a_late_tick_sends_only_the_breach() -> None:
    """A first tick after the due time sends sla.breached alone (approaching is marked as said)."""
    (tracked,) = opened()
    state, raised = tracker.alerts([tracked], tracked.due + timedelta(minutes=1))
    assert [a.kind for a in raised] == ["sla.breached"]
    assert tracker.alerts(state, tracked.due + timedelta(days=1))[1] == []


def test_overdue_by() -> None:
    """Overdue time is zero before the due time and the excess after it."""
    (tracked,) = opened()
    assert tracker.overdue_by(tracked, tracked.due - timedelta(hours=1)) == timedelta(0)
    assert tracker.overdue_by(tracked, tracked.due + timedelta(hours=5)) == timedelta(hours=5)


def tracked_for(event: Header, agreement_id: str) -> list[tracker.Tracked]:
    """Every obligation ``event`` opens, tracked directly from ``obligations`` (no de-duplication)."""
    found = obligations(event, agreement(agreement_id), calendars())
    return [tracker.Tracked(o, event.created_at, o.due) for o in found]


def test_multi_party_request_opens_one_obligation_per_party() -> None:
    """A regional request addressed to VN and KH opens a verification deadline on each of them."""
    event = request(sender="LA.MOLSW", to=("VN", "KH"))
    still, _ = tracker.on_delivered(event, agreement("COMMIT-ACTIP"), [], calendars())
    assert sorted(t.obligation.party for t in still) == ["KH", "VN"]


def test_an_answer_closes_only_the_answering_partys_obligation() -> None:
    """VN's response closes VN's obligation; KH's stays open until KH answers."""
    open_now = tracked_for(request(sender="LA.MOLSW", to=("VN", "KH")), "COMMIT-ACTIP")
    assert sorted(t.obligation.party for t in open_now) == ["KH", "VN"]
    reply = header(ANSWER, "VN.MOLISA", ("LA",), event_id="ans-vn", correlation_id="req-1")
    still, closed = tracker.on_delivered(reply, agreement("COMMIT-ACTIP"), open_now, calendars())
    assert [t.obligation.party for t in closed] == ["VN"]
    assert [t.obligation.party for t in still] == ["KH"]
