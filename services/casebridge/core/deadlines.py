"""Deadlines as data: the obligations an event opens under an agreement, in working days.

``obligations(header, agreement, calendars)`` is pure: for each addressed counterpart country
the agreement's deadlines opened by ``header.event_type`` become ``Obligation`` values, due by the
end of the n-th working day (local time, weekend, public holidays of the party) after it.
The closing event answers the opening one: its ``correlation_id`` is ``Obligation.opened_by``.
Calendars come from ``deploy/agreements/calendars.yaml`` (configuration); without one a country
counts Saturday and Sunday as its weekend, no holidays, and UTC.

The tracker's logic too: ``on_delivered`` opens and closes a case's obligations as its events are
delivered, ``alerts`` raises ``deadline.approaching`` / ``sla.breached`` with the time. ``scale``
shortens every clock for demonstrations (0.5 = twice as fast); 1 in production.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any

import yaml

from casebridge.core.agreements import ANY_PARTY, Agreement, Deadline, Doc, compose
from casebridge.core.model import COUNTRIES, Header, country_of

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Calendar:
    """A country's working week and public holidays."""

    country: str
    utc_offset: timedelta = timedelta(0)
    weekend: frozenset[int] = frozenset({5, 6})  # date.weekday(): 5 Saturday, 6 Sunday
    holidays: frozenset[date] = frozenset()


@dataclass(frozen=True)
class Obligation:
    """A party must send ``closes_on`` (correlated to ``opened_by``) before ``due``."""

    name: str
    party: str  # the country that must act
    due: datetime  # UTC
    closes_on: str  # the event type that closes it
    opened_by: str  # event id of the opening event = correlation_id of the closing one
    case_ref: str
    agreement: tuple[str, int]
    working_days: int
    source: str  # a citation, or "configuration"
    clause: str


def is_working_day(day: date, calendar: Calendar) -> bool:
    return day.weekday() not in calendar.weekend and day not in calendar.holidays


def add_working_days(start: datetime, days: int, calendar: Calendar) -> datetime:
    """The end (local midnight, as UTC) of the ``days``-th working day after ``start``."""
    zone = timezone(calendar.utc_offset)
    day, counted = start.astimezone(zone).date(), 0
    while counted < days:
        day += timedelta(days=1)
        counted += is_working_day(day, calendar)
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)


def obligations(header: Header, agreement: Agreement,
                calendars: Mapping[str, Calendar] | None = None,
                parties: Collection[str] | None = None) -> list[Obligation]:
    """The obligations ``header`` opens on each addressed counterpart under ``agreement``.

    ``parties`` limits them to the counterparts this agreement was applied to (``Deliver.applied``
    of a multi-party event whose counterparts fall under different agreements).
    """
    sender = country_of(header.sender)
    addressed = {t if "." not in t else country_of(t) for t in header.to}
    found: list[Obligation] = []
    for party in sorted(addressed - {sender}):
        if party not in agreement.parties or (parties is not None and party not in parties):
            continue
        for deadline in deadlines_for(agreement, header.event_type, party):
            calendar = (calendars or {}).get(party, Calendar(party))
            found.append(_obligation(header, agreement, deadline, party, calendar))
    return found


def deadlines_for(agreement: Agreement, event_type: str, party: str) -> list[Deadline]:
    """The deadlines ``event_type`` opens on ``party``: a party's own entry beats ``"*"``."""
    chosen: dict[str, Deadline] = {}
    for deadline in agreement.deadlines:
        if deadline.opens_on != event_type or deadline.party not in (party, ANY_PARTY):
            continue
        if deadline.name not in chosen or deadline.party == party:
            chosen[deadline.name] = deadline
    return list(chosen.values())


def _obligation(header: Header, agreement: Agreement, deadline: Deadline, party: str,
                calendar: Calendar) -> Obligation:
    return Obligation(
        name=deadline.name, party=party,
        due=add_working_days(header.created_at, deadline.working_days, calendar),
        closes_on=deadline.closes_on, opened_by=header.event_id, case_ref=header.case_ref,
        agreement=(agreement.id, agreement.version), working_days=deadline.working_days,
        source=deadline.source, clause=deadline.clause)


def parse_calendars(text: str, source: str) -> dict[str, Calendar]:
    """Parse ``calendars.yaml``; faults raise ``PolicyError("source:line: reason")``."""
    root = compose(text, source)
    doc = Doc(source)
    top = doc.mapping(root, "the document", required={"calendars"}, allowed={"calendars"})
    countries = doc.mapping(top["calendars"], "calendars", allowed=set(COUNTRIES))
    return {country: _calendar(doc, node, country) for country, node in countries.items()}


def _calendar(doc: Doc, node: yaml.Node, country: str) -> Calendar:
    where = f"calendars.{country}"
    fields = doc.mapping(node, where, required={"utc_offset", "weekend", "holidays"},
                         allowed={"utc_offset", "weekend", "holidays"})
    offset = doc.string(fields["utc_offset"], f"{where}.utc_offset",
                        pattern=r"^[+-](?:0\d|1[0-4]):[0-5]\d$")
    sign = -1 if offset[0] == "-" else 1
    hours, minutes = int(offset[1:3]), int(offset[4:6])
    weekend = doc.strings(fields["weekend"], f"{where}.weekend", WEEKDAYS, unique=True)
    holidays = [doc.day(item, f"{where}.holidays")
                for item in doc.sequence(fields["holidays"], f"{where}.holidays")]
    return Calendar(country, sign * timedelta(hours=hours, minutes=minutes),
                    frozenset(WEEKDAYS.index(d) for d in weekend), frozenset(holidays))


APPROACHING_AT = 0.8  # share of the allowed time after which "deadline.approaching" is sent


@dataclass(frozen=True)
class Tracked:
    """One open obligation and what has been said about it."""

    obligation: Obligation
    opened_at: datetime
    due: datetime  # after scaling
    approaching_sent: bool = False
    breached_sent: bool = False

    @property
    def warn_at(self) -> datetime:
        return self.opened_at + (self.due - self.opened_at) * APPROACHING_AT


@dataclass(frozen=True)
class Alert:
    kind: str  # "deadline.approaching" or "sla.breached"
    tracked: Tracked


def scaled_due(obligation: Obligation, opened_at: datetime, scale: float) -> datetime:
    return opened_at + (obligation.due - opened_at) * scale


def on_delivered(
    header: Any,
    agreement: Agreement | None,
    open_now: Iterable[Tracked],
    calendars: Mapping[str, Calendar],
    scale: float = 1.0,
) -> tuple[list[Tracked], list[Tracked]]:
    """(still open incl. newly opened, closed by this event) after one delivered event."""
    still: list[Tracked] = []
    closed: list[Tracked] = []
    for tracked in open_now:
        if closes(tracked.obligation, header):
            closed.append(tracked)
        else:
            still.append(tracked)
    if agreement is not None:
        for found in obligations(header, agreement, calendars):
            if all(identity(t.obligation) != identity(found) for t in still + closed):
                still.append(Tracked(found, header.created_at, scaled_due(found, header.created_at, scale)))
    return still, closed


def identity(obligation: Obligation) -> tuple[str, str, str]:
    return obligation.opened_by, obligation.name, obligation.party


def closes(obligation: Obligation, header: Any) -> bool:
    """An answer of the right type, naming the opening event, from the obligated party closes it."""
    return bool(
        header.event_type == obligation.closes_on
        and header.correlation_id == obligation.opened_by
        and country_of(header.sender) == obligation.party
    )


def alerts(open_now: Iterable[Tracked], now: datetime) -> tuple[list[Tracked], list[Alert]]:
    """The obligations with their alert flags updated, and the alerts to send now."""
    updated: list[Tracked] = []
    raised: list[Alert] = []
    for tracked in open_now:
        if not tracked.breached_sent and now >= tracked.due:
            tracked = replace(tracked, breached_sent=True, approaching_sent=True)
            raised.append(Alert("sla.breached", tracked))
        elif not tracked.approaching_sent and now >= tracked.warn_at:
            tracked = replace(tracked, approaching_sent=True)
            raised.append(Alert("deadline.approaching", tracked))
        updated.append(tracked)
    return updated, raised


def overdue_by(tracked: Tracked, now: datetime) -> timedelta:
    return max(now - tracked.due, timedelta(0))
