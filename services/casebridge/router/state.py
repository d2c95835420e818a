"""The router's state for one partition of the outboxes, typed, and its changelog encoding.

Partition p of every ``cb.out.*`` topic holds the same cases (murmur2 of the case reference), so
the router's state for them lives in partition p of the compacted ``cb.router.state`` topic,
written in the same transaction as the deliveries, read back when the partition is assigned:

- ``e|<event id>`` -> where the id was accepted and the envelope's hash (replay vs duplicate),
  kept only while an envelope of that age would still be fresh: an older one is ``stale`` anyway;
- ``s|<sender>`` -> the head of the sender's chain in this partition;
- ``c|<case ref>`` -> the case's consent scopes and witness hold.
"""

from __future__ import annotations

import json
from collections import ChainMap
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from casebridge.core.model import CaseState
from casebridge.core.relay import Accepted, Position, SenderState


@dataclass(frozen=True)
class Seen:
    """An accepted event id: where, which bytes, and when it was created (for expiry)."""

    accepted: Accepted
    created_at: datetime


@dataclass(frozen=True)
class Change:
    """One entry of the state set (value) or deleted (None)."""

    kind: str  # "e" seen event id, "s" sender chain head, "c" case flags
    key: str
    value: Seen | SenderState | CaseState | None


@dataclass
class PartitionState:
    """The three tables of one partition; ``layer`` gives a view with uncommitted changes on top."""

    seen: MutableMapping[str, Seen] = field(default_factory=dict)
    senders: MutableMapping[str, SenderState] = field(default_factory=dict)
    cases: MutableMapping[str, CaseState] = field(default_factory=dict)

    def table(self, kind: str) -> MutableMapping[str, object]:
        return {"e": self.seen, "s": self.senders, "c": self.cases}[kind]  # type: ignore[return-value]

    def apply(self, changes: Iterable[Change]) -> None:
        for change in changes:
            table = self.table(change.kind)
            if change.value is None:
                table.pop(change.key, None)
            else:
                table[change.key] = change.value

    def layer(self) -> PartitionState:
        """A view for one batch: its writes stay in a layer above this state, which changes only
        when the batch's transaction committed (``apply`` the batch's changes then)."""
        return PartitionState(ChainMap({}, self.seen), ChainMap({}, self.senders), ChainMap({}, self.cases))

    def expired(self, now: datetime, keep: timedelta) -> list[Change]:
        """Deletions of the event ids created before ``now - keep``."""
        cutoff = now - keep
        return [Change("e", k, None) for k, v in self.seen.items() if v.created_at < cutoff]


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
