"""The deadline tracker's pure steps over its tables (one per ``cb.audit`` partition).

``step``: a ``delivered`` (or ``forwarded``) audit record may open obligations
(``deadlines.obligations``) or close one (the answer names the opening event in
``correlation_id``); the case's open obligations are the table ``o|<case ref>``. ``tick``: every
obligation that falls due raises a signed ``deadline.approaching`` / ``sla.breached`` (sealed by
``REG.DEADLINES``) to the responsible focal point and the secretariat, with a metadata record on
``cb.audit``; the flags that say it was sent change in the same transaction, so an alert is
neither lost nor sent twice.

In a federation each country's tracker reads its own cluster's ``cb.audit``, keeps only the
obligations of its own country (the other side's tracker keeps theirs: none is tracked twice) and
alerts its own participants; the secretariat, on its own cluster, sees every alert in the mirrored
audit records.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from casebridge.core import avro, deadlines, issued, sealing, topics
from casebridge.core.agreements import Agreement
from casebridge.core.errors import CaseBridgeError
from casebridge.core.keys import Identity
from casebridge.core.model import Directory, Header
from casebridge.core.stream import Change, Out, Record, Step, Tables

SECRETARIAT = "REG.SECRETARIAT"
KINDS = ("o",)


@dataclass(frozen=True)
class Ctx:
    schemas: avro.SchemaSet
    directory: Directory
    agreements: Mapping[str, Agreement]
    calendars: Mapping[str, deadlines.Calendar]
    scale: float
    tracker: Identity
    now: datetime
    country: str | None = None  # in a federation: only this country's obligations, alerts to its own


FOLLOWED = ("delivered", "forwarded")  # forwarded: accepted here for another country's cluster


def new_tables() -> Tables:
    return Tables(KINDS)


def step(tables: Tables, record: Record, ctx: Ctx) -> Step:
    """One audit record: the case's obligations after it (a change only when they changed)."""
    try:
        audit = avro.decode(ctx.schemas, record.value or b"", issued.AUDIT)
    except CaseBridgeError as exc:
        return Step((), (), "audit_undecodable", {"code": exc.code})
    if audit["outcome"] not in FOLLOWED or not audit.get("event_id"):
        return Step((), (), "ignored")
    header = header_of(audit)
    open_now: tuple[deadlines.Tracked, ...] = tables["o"].get(header.case_ref, ())
    still, closed = deadlines.on_delivered(
        header, ctx.agreements.get(header.agreement_id or ""), open_now, ctx.calendars, ctx.scale)
    if ctx.country is not None:  # each country's tracker keeps its own country's obligations
        still = [t for t in still if t.obligation.party == ctx.country]
    if tuple(still) == open_now:
        return Step((), (), "ignored")
    change = Change("o", header.case_ref, tuple(still) or None)
    opened = len(still) - (len(open_now) - len(closed))
    return Step((), (change,), "obligations_changed",
                {"event_id": header.event_id, "opened": opened,
                 "met": [t.obligation.name for t in closed]})


def tick(tables: Tables, partition: int, ctx: Ctx) -> Step:
    """Every alert due now in this partition, and the obligations' flags after them."""
    outgoing: list[Out] = []
    changes: list[Change] = []
    raised_kinds: list[str] = []
    for case_ref, open_now in tables["o"].items():
        updated, raised = deadlines.alerts(open_now, ctx.now)
        if not raised:
            continue
        for alert in raised:
            outgoing += alert_records(alert, ctx)
            raised_kinds.append(alert.kind)
        changes.append(Change("o", case_ref, tuple(updated)))
    return Step(tuple(outgoing), tuple(changes), "alerts_sent",
                {"alerts": raised_kinds} if raised_kinds else {})


def alert_records(alert: deadlines.Alert, ctx: Ctx) -> list[Out]:
    o = alert.tracked.obligation
    recipients = responsible(ctx.directory, o)
    if ctx.country is not None:  # another cluster's inboxes are out of reach: the audit record tells
        recipients = tuple(r for r in recipients if r.split(".", 1)[0] == ctx.country)
    operational = {"obligation": o.name, "due_at": alert.tracked.due, "responsible": o.party,
                   "agreement_id": o.agreement[0], "clause": o.clause, "note": None}
    header, data = issued.alert(ctx.schemas, ctx.directory, ctx.tracker, alert.kind, operational,
                                o.case_ref, o.opened_by, o.agreement, recipients, ctx.now)
    key = o.case_ref.encode()
    headers = tuple(issued.cloudevent_headers(header))
    audit = issued.audit_record(ctx.schemas, header, sealing.envelope_hash(data), ("deadline-tracker", 0, 0),
                                alert.kind, None, recipients, (), ctx.now)
    return [*(Out(topics.inbox(r), key, data, headers) for r in recipients), Out(topics.AUDIT, key, audit)]


def responsible(directory: Directory, obligation: deadlines.Obligation) -> tuple[str, ...]:
    """The obligated party's government focal point(s) and the secretariat."""
    focal = {p.id for p in directory.participants.values()
             if p.country == obligation.party and p.role == "government"}
    return tuple(sorted((focal | {SECRETARIAT}) & directory.participants.keys()))


def header_of(audit: Mapping[str, Any]) -> Header:
    """The header fields the tracker needs, from a metadata-only audit record."""
    return Header(
        event_id=audit["event_id"],
        event_type=audit["event_type"],
        sender=audit["sender"],
        sender_key_id="",
        created_at=audit["created_at"],
        case_ref=audit["case_ref"],
        to=tuple(audit.get("to") or ()),
        correlation_id=audit.get("correlation_id"),
        agreement_id=audit.get("agreement_id"),
    )


def encode(change: Change) -> tuple[bytes, bytes | None]:
    key = f"{change.kind}|{change.key}".encode()
    if change.value is None:
        return key, None
    return key, json.dumps([to_json(t) for t in change.value], separators=(",", ":")).encode()


def decode(key: bytes, value: bytes | None) -> Change:
    kind, _, name = key.decode().partition("|")
    if value is None:
        return Change(kind, name, None)
    return Change(kind, name, tuple(from_json(d) for d in json.loads(value)))


def to_json(t: deadlines.Tracked) -> dict[str, Any]:
    o = t.obligation
    return {
        "name": o.name, "party": o.party, "due": o.due.isoformat(), "closes_on": o.closes_on,
        "opened_by": o.opened_by, "case_ref": o.case_ref, "agreement": list(o.agreement),
        "working_days": o.working_days, "source": o.source, "clause": o.clause,
        "opened_at": t.opened_at.isoformat(), "scaled_due": t.due.isoformat(),
        "approaching_sent": t.approaching_sent, "breached_sent": t.breached_sent,
    }


def from_json(d: Mapping[str, Any]) -> deadlines.Tracked:
    o = deadlines.Obligation(
        d["name"], d["party"], datetime.fromisoformat(d["due"]), d["closes_on"], d["opened_by"],
        d["case_ref"], (d["agreement"][0], d["agreement"][1]), d["working_days"], d["source"], d["clause"],
    )
    return deadlines.Tracked(o, datetime.fromisoformat(d["opened_at"]),
                             datetime.fromisoformat(d["scaled_due"]), d["approaching_sent"],
                             d["breached_sent"])
