"""Deadlines as data: working days per country calendar, and the obligations an event opens."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from casebridge.core.deadlines import (
    Calendar,
    add_working_days,
    obligations,
    parse_calendars,
)
from casebridge.core.errors import PolicyError
from casebridge.core.routing import Deliver, route
from tests.unit.policy_fixtures import (
    AGREEMENTS_DIR,
    ALL_CONSENT,
    agreement,
    directory,
    header,
    policy,
)

PLAIN = Calendar("XX")
BANGKOK = timedelta(hours=7)


def calendars() -> dict[str, Calendar]:
    return parse_calendars((AGREEMENTS_DIR / "calendars.yaml").read_text(), "calendars.yaml")


WORKING_DAYS = [
    # (start UTC, days, calendar, due UTC)
    (datetime(2026, 11, 2, 9, tzinfo=UTC), 1, PLAIN, datetime(2026, 11, 4, tzinfo=UTC)),
    (datetime(2026, 11, 6, 9, tzinfo=UTC), 1, PLAIN, datetime(2026, 11, 10, tzinfo=UTC)),
    (datetime(2026, 11, 7, 9, tzinfo=UTC), 5, PLAIN, datetime(2026, 11, 14, tzinfo=UTC)),
    (datetime(2026, 12, 31, 9, tzinfo=UTC), 1,
     Calendar("XX", holidays=frozenset({date(2027, 1, 1)})), datetime(2027, 1, 5, tzinfo=UTC)),
    # 23:00 UTC Monday is already Tuesday in Bangkok: one working day ends Wednesday 24:00 local
    (datetime(2026, 11, 2, 23, tzinfo=UTC), 1, Calendar("TH", BANGKOK),
     datetime(2026, 11, 5, tzinfo=UTC) - BANGKOK),
]


@pytest.mark.parametrize(("start", "days", "calendar", "due"), WORKING_DAYS)
def test_add_working_days(start: datetime, days: int, calendar: Calendar, due: datetime) -> None:
    """A deadline ends at local midnight after the n-th working day, skipping weekends/holidays."""
    assert add_working_days(start, days, calendar) == due


def test_viet_nam_verification_is_thirty_working_days_around_tet() -> None:
    """TH asks VN on 10 Feb 2026: 20 + 10 working days, Tet skipped, due end of 31 Mar (VN time)."""
    h = header("nationality_verification.requested", "TH.MSDHS", ("VN",),
               created_at=datetime(2026, 2, 10, 3, tzinfo=UTC))
    (obligation,) = obligations(h, agreement("TH-VN"), calendars())
    assert (obligation.party, obligation.working_days) == ("VN", 30)
    assert obligation.due == datetime(2026, 3, 31, 17, tzinfo=UTC)
    assert obligation.closes_on == "nationality_verification.responded"
    assert obligation.opened_by == h.event_id and obligation.agreement == ("TH-VN", 1)
    assert "20 working days" in obligation.source


def test_obligation_falls_on_the_counterpart_not_the_sender() -> None:
    """VN asking TH opens TH's obligation (configuration), not VN's."""
    h = header("nationality_verification.requested", "VN.MOLISA", ("TH",))
    (obligation,) = obligations(h, agreement("TH-VN"))
    assert obligation.party == "TH" and obligation.source == "configuration"


def test_regional_country_entry_beats_the_wildcard() -> None:
    """Under COMMIT-ACTIP VN keeps its own 30-day entry; KH gets the '*' configuration entry."""
    h = header("nationality_verification.requested", "LA.MOLSW", ("VN", "KH"))
    found = {o.party: o for o in obligations(h, agreement("COMMIT-ACTIP"), calendars())}
    assert set(found) == {"KH", "VN"}
    assert "Viet Nam" in found["VN"].source and found["KH"].source == "configuration"


def test_event_that_opens_nothing_has_no_obligations() -> None:
    """origin.notified opens no deadline."""
    assert obligations(header("origin.notified", "TH.MSDHS", ("KH",)), agreement("TH-KH")) == []


def test_return_plan_opens_a_repatriation_decision() -> None:
    """A proposed return plan opens a decision obligation closed by repatriation.approved."""
    (obligation,) = obligations(header("return_plan.proposed", "TH.MSDHS", ("KH.MOSVY",)),
                                agreement("TH-KH"))
    assert (obligation.party, obligation.closes_on) == ("KH", "repatriation.approved")


def test_committed_calendars_cover_every_country() -> None:
    """calendars.yaml parses and has a calendar with holidays for each of the six countries."""
    found = calendars()
    assert set(found) == {"KH", "LA", "MM", "TH", "VN", "CN"}
    assert all(c.holidays for c in found.values())
    assert found["MM"].utc_offset == timedelta(hours=6, minutes=30)


@pytest.mark.parametrize(("text", "line", "reason"), [
    ("calendars:\n  TH:\n    utc_offset: '+7'\n    weekend: [sat]\n    holidays: []\n", 3,
     "malformed"),
    ("calendars:\n  XX: {}\n", 2, "unknown key 'XX'"),
    ("calendars:\n  TH:\n    utc_offset: '+07:00'\n    weekend: [sat]\n    holidays: [soon]\n",
     5, "must be a date"),
])
def test_calendar_errors_name_the_line(text: str, line: int, reason: str) -> None:
    """A broken calendars file raises PolicyError with file:line and the reason."""
    with pytest.raises(PolicyError) as caught:
        parse_calendars(text, "calendars.yaml")
    assert caught.value.why.startswith(f"calendars.yaml:{line}: ") and reason in caught.value.why


def test_multi_party_obligations_follow_the_agreement_applied_to_each_counterpart() -> None:
    """KH to VN and LA: VN's verification falls under KH-VN, LA's under the regional framework."""
    h = header("nationality_verification.requested", "KH.MOSVY", ("VN", "LA"))
    decision = route(h, policy(), directory(), ALL_CONSENT, h.created_at)
    assert isinstance(decision, Deliver)
    assert dict(decision.applied) == {"VN": ("KH-VN", 1), "LA": ("COMMIT-ACTIP", 1)}
    regional = obligations(h, agreement("COMMIT-ACTIP"), parties=["LA"])
    bilateral = obligations(h, agreement("KH-VN"), parties=["VN"])
    assert [o.party for o in regional] == ["LA"] and [o.party for o in bilateral] == ["VN"]
