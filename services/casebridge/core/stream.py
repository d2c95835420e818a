"""The values of a stream processor's pure step: the record consumed, the records to produce, the
changes of its per-partition tables, and the tables themselves. A loop (``runtime.txloop``) polls,
steps, produces and commits; the steps (``router.step``, ``deadlines.step``) import only the core.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

RECORD_OVERHEAD = 512  # bytes a record adds to its key, value and headers in a batch (generous)


@dataclass(frozen=True)
class Record:
    """One consumed record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

    def header(self, name: str) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)

    @property
    def at(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.offset)


@dataclass(frozen=True)
class Out:
    """One record to produce; ``partition`` None lets the murmur2 partitioner place it by key."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    partition: int | None = None

    @property
    def size(self) -> int:
        return (len(self.key or b"") + len(self.value or b"") + RECORD_OVERHEAD
                + sum(len(n) + len(v) for n, v in self.headers))


@dataclass(frozen=True)
class Change:
    """One entry of a table set (value) or deleted (None)."""

    kind: str  # the table
    key: str
    value: Any


@dataclass(frozen=True)
class Step:
    """What one record (or one tick) yields: records to produce, table changes, a log line."""

    outgoing: tuple[Out, ...]
    changes: tuple[Change, ...]
    outcome: str
    log: Mapping[str, Any] = field(default_factory=dict)  # the summary line (no personal data)


class Tables:
    """The tables of one partition, by kind; ``layer`` gives a batch's view of them."""

    def __init__(self, kinds: Iterable[str], maps: Mapping[str, MutableMapping[str, Any]] | None = None):
        self.maps: dict[str, MutableMapping[str, Any]] = dict(maps) if maps else {k: {} for k in kinds}

    def __getitem__(self, kind: str) -> MutableMapping[str, Any]:
        return self.maps[kind]

    def apply(self, changes: Iterable[Change]) -> None:
        for change in changes:
            table = self.maps[change.kind]
            if change.value is None:
                table.pop(change.key, None)
            else:
                table[change.key] = change.value

    def layer(self) -> Tables:
        """A view for one batch: its writes stay in a layer above these tables, which change only
        when the batch's transaction committed (``apply`` the batch's changes then)."""
        return Tables(self.maps, {k: ChainMap({}, m) for k, m in self.maps.items()})
