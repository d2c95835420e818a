"""The values of a stream processor's pure step: the record consumed, the records to produce, the
changes of its per-partition tables, and the tables themselves. A loop (``runtime.txloop``) polls,
steps, produces and commits; the steps (``router.step``, ``deadlines.step``) import only the core.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, MutableMapping
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
        return Tables(self.maps, {k: Layer(m) for k, m in self.maps.items()})


_GONE = object()  # a key deleted in a layer
_UNSET = object()  # a key the layer has not touched


class Layer(MutableMapping[str, Any]):
    """A table seen through one batch: writes and deletions stay here, reads fall through to the
    table below. (``collections.ChainMap`` cost ~4 us a lookup in the router's step and cannot
    hide a key deleted in the layer.)"""

    def __init__(self, below: Mapping[str, Any]) -> None:
        self.below = below
        self.top: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        value = self.top.get(key, _UNSET)
        if value is _UNSET:
            return self.below.get(key, default)
        return default if value is _GONE else value

    def __getitem__(self, key: str) -> Any:
        value = self.get(key, _GONE)
        if value is _GONE:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key, _GONE) is not _GONE

    def __setitem__(self, key: str, value: Any) -> None:
        self.top[key] = value

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self.top[key] = _GONE

    def __iter__(self) -> Iterator[str]:
        for key, value in self.top.items():
            if value is not _GONE:
                yield key
        yield from (k for k in self.below if k not in self.top)

    def __len__(self) -> int:
        return sum(1 for _ in self)
