"""The deadline tracker as a processor of the transactional loop (``runtime.txloop``): it consumes
``cb.audit`` (read_committed), keeps each case's open obligations in ``cb.deadlines.state``
(co-partitioned with ``cb.audit``) and every ``tick_every`` seconds sends the alerts that fell due.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from casebridge.core import topics
from casebridge.core.deadlines import Calendar
from casebridge.core.issued import TRACKER
from casebridge.core.stream import Change, Record, Step, Tables
from casebridge.deadlines import step as tracker
from casebridge.runtime.logging import get_logger
from casebridge.runtime.settings import Settings
from casebridge.runtime.txloop import RESTART_EXIT, Fatal, Loop
from casebridge.runtime.world import World

log = get_logger("casebridge.deadlines")
GROUP = "casebridge-deadlines"


class TrackerProcessor:
    name = "deadlines"
    group = GROUP
    changelog = topics.DEADLINES_STATE
    routine = frozenset({"obligations_changed"})  # one per audit record read: counted per batch

    def __init__(self, world: World, calendars: Mapping[str, Calendar], scale: float,
                 tick_every: float = 1.0, country: str | None = None) -> None:
        self.world, self.calendars, self.scale, self.tick_every = world, calendars, scale, tick_every
        self.country = country
        self.subscription = [topics.AUDIT]
        self.identity = world.identity(TRACKER)

    def new_tables(self) -> Tables:
        return tracker.new_tables()

    def encode(self, change: Change) -> tuple[bytes, bytes | None]:
        return tracker.encode(change)

    def decode(self, key: bytes, value: bytes | None) -> Change:
        return tracker.decode(key, value)

    def context(self, now: datetime, poison: frozenset[tuple[str, int, int]]) -> tracker.Ctx:
        agreements = {a.id: a for a in self.world.agreements}
        return tracker.Ctx(self.world.schemas, self.world.directory, agreements, self.calendars,
                           self.scale, self.identity, now, self.country)

    def prepare(self, records: list[Record], ctx: tracker.Ctx) -> list[Any]:
        return [None] * len(records)

    def step(self, tables: Tables, record: Record, ctx: tracker.Ctx, prepared: Any) -> Step:
        return tracker.step(tables, record, ctx)

    def tick(self, tables: Tables, partition: int, ctx: tracker.Ctx) -> Step:
        return tracker.tick(tables, partition, ctx)

    def blocked(self, now: datetime) -> str | None:
        expires = self.world.directory.expires_at
        return f"the directory expired at {expires.isoformat()}" if expires <= now else None

    def close(self) -> None:
        """Nothing of its own to release."""


def run(settings: Settings, world: World, calendars: Mapping[str, Calendar], scale: float,
        stop: threading.Event) -> int:
    """A tracker worker until ``stop``; the exit code."""
    from casebridge.runtime.ckafka import follow_directory

    processor = TrackerProcessor(world, calendars, scale, country=settings.country or None)
    try:
        loop = Loop(settings, processor)
    except Fatal as exc:  # refused at the start (its rights): say so, let a supervisor try again
        log.error("deadlines_fatal", error=str(exc), action=f"exit {RESTART_EXIT}")
        return RESTART_EXIT
    follow_directory(settings, processor, stop, GROUP)
    return loop.run(stop)


