"""The router's tables for one partition of the outboxes, typed, and their changelog encoding.

Partition p of every ``cb.out.*`` topic holds the same cases (murmur2 of the case reference), so
the router's tables for them live in partition p of the compacted ``cb.router.state`` topic,
written in the same transaction as the deliveries, read back when the partition is assigned:

- ``e|<event id>`` -> where the id was accepted and the envelope's hash (replay vs duplicate),
  kept only while an envelope of that age would still be fresh: an older one is ``stale`` anyway;
- ``s|<sender>`` -> the head of the sender's chain in this partition;
- ``c|<case ref>`` -> the case's consent scopes and witness hold.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from casebridge.core.model import CaseState
from casebridge.core.relay import Accepted, Position, SenderState
from casebridge.core.stream import Change, Tables

KINDS = ("e", "s", "c")


@dataclass(frozen=True)
class Seen:
    """An accepted event id: where, which bytes, and when it was created (for expiry)."""

    accepted: Accepted
    created_at: datetime


def new_tables() -> Tables:
    return Tables(KINDS)


def expired(tables: Tables, now: datetime, keep: timedelta) -> list[Change]:
    """Deletions of the event ids created before ``now - keep``."""
    cutoff = now - keep
    return [Change("e", k, None) for k, v in tables["e"].items() if v.created_at < cutoff]


def encode(change: Change) -> tuple[bytes, bytes | None]:
    """The changelog record (key, value; None is a tombstone) of one change."""
    key = f"{change.kind}|{change.key}".encode()
    value = change.value
    if value is None:
        return key, None
    if isinstance(value, Seen):
        p = value.accepted.position
        doc: object = [p.topic, p.partition, p.offset, value.accepted.envelope_hash.hex(),
                       value.created_at.isoformat()]
    elif isinstance(value, SenderState):
        doc = [value.sequence, value.last_hash.hex()]
    else:
        doc = [sorted(value.consent), value.witness_hold]
    return key, json.dumps(doc, separators=(",", ":")).encode()


def decode(key: bytes, value: bytes | None) -> Change:
    """The change a changelog record stands for (``encode``'s reverse)."""
    kind, _, name = key.decode().partition("|")
    if value is None:
        return Change(kind, name, None)
    doc = json.loads(value)
    if kind == "e":
        accepted = Accepted(Position(doc[0], doc[1], doc[2]), bytes.fromhex(doc[3]))
        return Change(kind, name, Seen(accepted, datetime.fromisoformat(doc[4])))
    if kind == "s":
        return Change(kind, name, SenderState(doc[0], bytes.fromhex(doc[1])))
    if kind == "c":
        return Change(kind, name, CaseState(frozenset(doc[0]), bool(doc[1])))
    raise ValueError(f"unknown state kind {kind!r}")
