"""Per-corridor figures of a federation, from the audit records of every country's router (pure).

When an envelope is for participants of another country, the origin router puts it on the corridor
``cb.xb.<FROM>.<TO>`` and audits ``forwarded`` (recipients: those in TO, ``decided_at``: when it
forwarded); TO's MirrorMaker copies the corridor onto TO's cluster, where TO's router re-checks the
record and audits ``delivered`` (or ``quarantined``) with the corridor topic as its source. For
each direction FROM->TO, matched by event id:

- ``forwarded``: envelopes forwarded (one per event id: a repeated audit record counts once);
- ``delivered``: of those, delivered at TO through the corridor;
- ``refused``: envelopes TO's router quarantined from the corridor and never delivered (a forged
  corridor record counts too; a mirrored duplicate of a delivered one, refused as a replay, not);
- ``pending``: forwarded, neither delivered nor refused yet; ``oldest_pending_s`` the age of the
  oldest (now - its ``decided_at``);
- ``unmatched``: delivered through the corridor with no forward seen (the origin's audit, mirrored
  to the secretariat separately, is behind);
- ``mirror_lag``: ``decided_at`` of the delivery minus that of the forward, in milliseconds.

Metadata only: event ids, country codes and decision times.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from casebridge.core import topics
from casebridge.monitor.percentiles import Latency, latency_of

Record = Mapping[str, Any]
Way = tuple[str, str]  # (FROM, TO) country codes
Key = tuple[str, str, str]  # (FROM, TO, event id or source position)


@dataclass(frozen=True)
class Crossing:
    """One direction of a corridor between two national clusters."""

    source: str
    target: str
    forwarded: int
    delivered: int
    refused: int
    pending: int
    unmatched: int
    mirror_lag: Latency
    oldest_pending_s: float | None

    @property
    def name(self) -> str:
        return f"{self.source}->{self.target}"


def corridor_of(topic: str) -> Way | None:
    """``cb.xb.TH.KH`` -> ``("TH", "KH")``; None for a topic that is not a corridor."""
    if not topic.startswith(topics.XB_PREFIX):
        return None
    source, _, target = topic[len(topics.XB_PREFIX):].partition(".")
    return (source, target) if source and target and "." not in target else None


def prefix(participant: str) -> str:
    return participant.partition(".")[0]


def forward_keys(record: Record) -> set[Key]:
    """(FROM, TO, event id) of a ``forwarded`` record: FROM the sender's country, TO its recipients'."""
    sender, event_id = str(record.get("sender") or ""), str(record.get("event_id") or "")
    if not sender or not event_id:
        return set()
    return {(prefix(sender), prefix(r), event_id) for r in record.get("recipients") or ()}


def arrival_key(record: Record) -> Key | None:
    """(FROM, TO, event id, else source position) of a record the destination wrote for a corridor."""
    way = corridor_of(str(record.get("topic") or ""))
    if way is None:
        return None
    position = f"{record.get('topic')}/{record.get('partition')}@{record.get('offset')}"
    return (*way, str(record.get("event_id") or position))


@dataclass(frozen=True)
class Seen:
    """The first forward, delivery and refusal of each (FROM, TO, event) in the audit records."""

    forwards: dict[Key, Record]
    deliveries: dict[Key, Record]
    refusals: set[Key]


def seen_in(records: Iterable[Record]) -> Seen:
    seen = Seen({}, {}, set())
    for record in records:
        outcome = record.get("outcome")
        if outcome == "forwarded":
            for key in forward_keys(record):
                seen.forwards.setdefault(key, record)
            continue
        arrival = arrival_key(record)
        if arrival is not None and outcome == "delivered":
            seen.deliveries.setdefault(arrival, record)
        elif arrival is not None and outcome == "quarantined":
            seen.refusals.add(arrival)
    return seen


def crossing(way: Way, seen: Seen, now: datetime) -> Crossing:
    forwards = {k: r for k, r in seen.forwards.items() if k[:2] == way}
    deliveries = {k: r for k, r in seen.deliveries.items() if k[:2] == way}
    refused = {k for k in seen.refusals if k[:2] == way} - deliveries.keys()
    lags = [ms(deliveries[k]["decided_at"] - r["decided_at"]) for k, r in forwards.items() if k in deliveries]
    pending = [r for k, r in forwards.items() if k not in deliveries and k not in refused]
    oldest = max((ms(now - r["decided_at"]) / 1000 for r in pending), default=None)
    return Crossing(way[0], way[1], len(forwards), len(lags), len(refused), len(pending),
                    len(deliveries.keys() - forwards.keys()), latency_of(lags), oldest)


def ms(delta: timedelta) -> float:
    return delta.total_seconds() * 1000


def crossings(records: Iterable[Record], now: datetime) -> tuple[Crossing, ...]:
    """Every corridor direction some audit record names, sorted by (FROM, TO)."""
    seen = seen_in(records)
    ways = {k[:2] for k in (*seen.forwards, *seen.deliveries, *seen.refusals)}
    return tuple(crossing((a, b), seen, now) for a, b in sorted(ways))
