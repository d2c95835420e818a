"""The deadline tracker's logic: open obligations from delivered events, close them, raise alerts.

Pure: the adapter (``casebridge.router.deadlines``) keeps the open obligations per case in a
changelog-backed table, feeds each delivered event's header here and ticks ``alerts`` with the
time. ``scale`` shortens every clock for demonstrations (0.5 = twice as fast); 1 in production.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from casebridge.core.agreements import Agreement
from casebridge.core.deadlines import Calendar, Obligation, obligations
from casebridge.core.model import country_of

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
