"""The secretariat's figures, computed from decoded audit records and the time (pure).

Audit records are metadata only; the figures keep only ids, types, codes, participant ids,
pseudonymous case references and times. Counting rules:

- an event counts once (its first ``delivered`` record; a router redelivery repeats the event id),
  with the recipients of all its ``delivered`` records: in a federation each country's router
  delivers to its own participants, and a ``forwarded`` record (the origin putting the envelope on
  a corridor) is not a delivery; on a corridor (unordered pair of the sender's country and a
  recipient's country; ``KH-KH`` is domestic, ``REG.*`` participants have no country) it counts
  once per recipient country, and ``deliveries`` counts each recipient. ``receipt.*`` events are
  counted apart, not on corridors.
- latency: an event's ``created_at`` to the ``created_at`` of the ``receipt.delivered`` its
  recipient sent (``correlation_id`` = the event, receipt sender = that recipient).
- outstanding: (event, recipient) pairs with no ``receipt.delivered`` yet.
- obligations: what the deadline tracker reported (``deadline.approaching`` / ``sla.breached``,
  ``correlation_id`` = the opening event). One is *met* when an event from the obligated country
  answers the opening event before a breach; *overdue* when breached and still unanswered.
  Obligations answered before the tracker warned never reach the audit stream and are not counted.
- quarantine: records refused per reason code (one per source position).
- crossings: per direction of a corridor between national clusters, what was forwarded, delivered
  through, refused and pending, and the mirror lag (``monitor.federation``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from casebridge.monitor import chains, federation
from casebridge.monitor.chains import ChainStatus
from casebridge.monitor.federation import Crossing
from casebridge.monitor.percentiles import Latency, latency_of

Record = Mapping[str, Any]
ALERTS = ("deadline.approaching", "sla.breached")
COUNTRIES = ("KH", "LA", "MM", "TH", "VN", "CN")
LIST_LIMIT = 50


@dataclass(frozen=True)
class Corridor:
    a: str
    b: str
    events: int
    deliveries: int
    by_type: Mapping[str, int]

    @property
    def name(self) -> str:
        return f"{self.a}-{self.b}"


@dataclass(frozen=True)
class Outstanding:
    event_id: str
    event_type: str
    case_ref: str
    sender: str
    recipient: str
    age_s: float


@dataclass(frozen=True)
class Obligation:
    agreement_id: str
    opened_by: str  # the event id that opened it
    case_ref: str
    parties: tuple[str, ...]  # the obligated countries
    status: str  # open, met, breached (answered late), overdue (breached, unanswered)
    warned_at: datetime | None
    breached_at: datetime | None
    answered_at: datetime | None


@dataclass(frozen=True)
class Figures:
    generated_at: datetime
    records: int
    events: int
    deliveries: int
    corridors: tuple[Corridor, ...]
    series: tuple[tuple[datetime, str, str, int], ...]  # bucket start, corridor, event type, events
    receipts: Mapping[str, int]
    latency: Latency
    outstanding: tuple[Outstanding, ...]  # every pair, oldest first
    obligations: tuple[Obligation, ...]
    quarantine: Mapping[str, int]
    chains: tuple[ChainStatus, ...]
    crossings: tuple[Crossing, ...]  # a federation's corridor directions (none on one cluster)


def country_of(participant: str) -> str | None:
    country = participant.partition(".")[0]
    return None if country == "REG" or not country else country


def pair(x: str, y: str) -> tuple[str, str]:
    return (x, y) if x <= y else (y, x)


def first_delivered(records: Iterable[Record]) -> list[Record]:
    """The first ``delivered`` record of each event id, in the given order, with the recipients of
    every ``delivered`` record of that event (first seen first)."""
    firsts: dict[str, Record] = {}
    recipients: dict[str, dict[str, None]] = {}  # an insertion-ordered set per event
    for record in records:
        if record.get("outcome") == "delivered" and record.get("event_id"):
            firsts.setdefault(record["event_id"], record)
            more = dict.fromkeys(record.get("recipients") or ())
            recipients.setdefault(record["event_id"], {}).update(more)
    return [{**first, "recipients": list(recipients[event_id])} for event_id, first in firsts.items()]


def is_receipt(record: Record) -> bool:
    return str(record.get("event_type") or "").startswith("receipt.")


def corridors_of(record: Record) -> set[tuple[str, str]]:
    """The corridors one event travels on (none for a regional sender)."""
    sender = country_of(str(record.get("sender") or ""))
    if sender is None:
        return set()
    targets = {country_of(r) for r in record.get("recipients") or ()}
    return {pair(sender, c) for c in targets if c is not None}


def corridor_figures(events: Sequence[Record]) -> tuple[Corridor, ...]:
    counts: dict[tuple[str, str], dict[str, int]] = {}
    deliveries: dict[tuple[str, str], int] = {}
    for record in events:
        for key in corridors_of(record):
            by_type = counts.setdefault(key, {})
            by_type[record["event_type"]] = by_type.get(record["event_type"], 0) + 1
        for key in filter(None, (pair_of(record, r) for r in record.get("recipients") or ())):
            deliveries[key] = deliveries.get(key, 0) + 1
    return tuple(Corridor(a, b, sum(t.values()), deliveries[(a, b)], dict(sorted(t.items())))
                 for (a, b), t in sorted(counts.items()))


def pair_of(record: Record, recipient: str) -> tuple[str, str] | None:
    sender, target = country_of(str(record.get("sender") or "")), country_of(recipient)
    return pair(sender, target) if sender and target else None


def bucket_start(at: datetime, bucket: timedelta) -> datetime:
    epoch = datetime.fromtimestamp(0, tz=at.tzinfo)
    return epoch + ((at - epoch) // bucket) * bucket


def series_of(events: Sequence[Record], bucket: timedelta) -> tuple[tuple[datetime, str, str, int], ...]:
    counts: dict[tuple[datetime, str, str], int] = {}
    for record in events:
        for a, b in corridors_of(record):
            key = (bucket_start(record["created_at"], bucket), f"{a}-{b}", record["event_type"])
            counts[key] = counts.get(key, 0) + 1
    return tuple((start, name, kind, n) for (start, name, kind), n in sorted(counts.items()))


def delivered_receipts(delivered: Sequence[Record]) -> dict[tuple[str, str], Record]:
    """``receipt.delivered`` records by (acknowledged event id, receipt sender)."""
    found: dict[tuple[str, str], Record] = {}
    for record in delivered:
        if record.get("event_type") == "receipt.delivered" and record.get("correlation_id"):
            found.setdefault((record["correlation_id"], record["sender"]), record)
    return found


def latency_and_outstanding(events: Sequence[Record], receipts: Mapping[tuple[str, str], Record],
                            now: datetime) -> tuple[Latency, tuple[Outstanding, ...]]:
    waits: list[float] = []
    missing: list[Outstanding] = []
    for event in events:
        for recipient in event.get("recipients") or ():
            receipt = receipts.get((event["event_id"], recipient))
            if receipt is not None:
                waits.append((receipt["created_at"] - event["created_at"]).total_seconds() * 1000)
            else:
                missing.append(Outstanding(event["event_id"], event["event_type"], event["case_ref"],
                                           event["sender"], recipient,
                                           (now - event["created_at"]).total_seconds()))
    return latency_of(waits), tuple(sorted(missing, key=lambda o: -o.age_s))


def obligations_of(records: Iterable[Record], answers: Sequence[Record]) -> tuple[Obligation, ...]:
    """One entry per (agreement, opening event, notified parties) the tracker reported on."""
    warned: dict[tuple[str, str, tuple[str, ...]], dict[str, Any]] = {}
    for record in records:
        if record.get("outcome") not in ALERTS or not record.get("correlation_id"):
            continue
        parties = tuple(sorted({c for r in record.get("recipients") or () if (c := country_of(r))}))
        key = (str(record.get("agreement_id") or ""), record["correlation_id"], parties)
        entry = warned.setdefault(key, {"case_ref": record.get("case_ref") or ""})
        entry.setdefault(record["outcome"], record.get("created_at") or record["decided_at"])
    return tuple(obligation(key, entry, answers) for key, entry in sorted(warned.items()))


def obligation(key: tuple[str, str, tuple[str, ...]], entry: Mapping[str, Any],
               answers: Sequence[Record]) -> Obligation:
    agreement_id, opened_by, parties = key
    answered = min((a["created_at"] for a in answers if a.get("correlation_id") == opened_by
                    and country_of(str(a.get("sender") or "")) in parties), default=None)
    breached = entry.get("sla.breached")
    if breached is None:
        status = "met" if answered is not None else "open"
    else:
        status = "breached" if answered is not None else "overdue"
    return Obligation(agreement_id, opened_by, entry["case_ref"], parties, status,
                      entry.get("deadline.approaching"), breached, answered)


def quarantine_counts(records: Iterable[Record]) -> dict[str, int]:
    """Refused records per reason code, one per source position (redeliveries count once)."""
    positions: dict[tuple[Any, Any, Any], str] = {}
    for record in records:
        if record.get("outcome") == "quarantined":
            key = (record.get("topic"), record.get("partition"), record.get("offset"))
            positions.setdefault(key, str(record.get("code") or "unknown"))
    counts: dict[str, int] = {}
    for code in positions.values():
        counts[code] = counts.get(code, 0) + 1
    return dict(sorted(counts.items()))


def compute(partitions: Sequence[Sequence[Record]], now: datetime,
            bucket: timedelta = timedelta(minutes=1)) -> Figures:
    """Every figure, from audit records grouped by audit partition in read order."""
    records = [r for part in partitions for r in part]
    delivered = first_delivered(records)
    events = [r for r in delivered if not is_receipt(r) and r.get("outcome") not in ALERTS]
    receipt_counts: dict[str, int] = {}
    for r in filter(is_receipt, delivered):
        receipt_counts[r["event_type"]] = receipt_counts.get(r["event_type"], 0) + 1
    latency, outstanding = latency_and_outstanding(events, delivered_receipts(delivered), now)
    return Figures(
        generated_at=now, records=len(records), events=len(events),
        deliveries=sum(len(r.get("recipients") or ()) for r in events),
        corridors=corridor_figures(events), series=series_of(events, bucket),
        receipts=dict(sorted(receipt_counts.items())), latency=latency, outstanding=outstanding,
        obligations=obligations_of(records, events), quarantine=quarantine_counts(records),
        chains=chains.check(partitions), crossings=federation.crossings(records, now),
    )
