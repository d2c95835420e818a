"""The router's records in flight: routed, their sends not yet acknowledged by the brokers.

The router routes a record (decides, sends its deliveries and audit record, updates its tables)
and goes on to the next without waiting for the brokers' acknowledgements; a record is acked in
faust, so that its offset may be committed, only once every send of it was acknowledged (faust
commits the highest offset below which every record was acked: a record still in flight holds
the commit back, so a crash re-reads it). Sends keep their order per partition: one producer,
idempotent, one request in flight per broker.

A failed send (a broker away past the producer's own retries, a producer left unusable) marks
the window failed. Before it routes anything else, the router waits until every send in flight
settled, then routes each record whose sends failed again, in order, with a new producer; a
record routed twice is a redelivery, which nodes store once. ``limit`` bounds how many records
are in flight, and so the memory and the work a crash repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from casebridge.runtime.logging import get_logger

log = get_logger("casebridge.router")
LIMIT = 1000  # records in flight at most


@dataclass
class Flight:
    event: Any
    acks: asyncio.Future[Any]


@dataclass
class Window:
    """Records in flight, oldest first; the lock keeps routing and recovery one at a time."""

    limit: int = LIMIT
    flights: deque[Flight] = field(default_factory=deque)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    failed: bool = False

    def add(self, event: Any, acks: asyncio.Future[Any] | None) -> None:
        """Track ``event`` until ``acks`` (its sends, gathered) resolve; None: nothing was sent."""
        if acks is None:
            event.ack()
            return
        flight = Flight(event, acks)
        self.flights.append(flight)
        acks.add_done_callback(lambda done: self._settled(flight, done))

    def _settled(self, flight: Flight, done: asyncio.Future[Any]) -> None:
        if done.cancelled() or done.exception() is not None:
            self.failed = True
            return
        flight.event.ack()
        while self.flights and self.flights[0].acks.done() and self._ok(self.flights[0].acks):
            self.flights.popleft()

    @staticmethod
    def _ok(acks: asyncio.Future[Any]) -> bool:
        return not acks.cancelled() and acks.exception() is None

    async def room(self) -> None:
        """Wait until fewer than ``limit`` records are in flight (or one failed)."""
        while len(self.flights) >= self.limit and not self.failed:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.flights[0].acks)
            await asyncio.sleep(0)

    async def drain(self) -> None:
        """Wait until every send in flight settled (acknowledged or failed)."""
        if self.flights:
            await asyncio.gather(*(f.acks for f in list(self.flights)), return_exceptions=True)

    async def recover(self, reroute: Callable[[Any], Awaitable[None]]) -> int:
        """After a failed send: settle everything in flight, then route each record whose sends
        failed again, in order (``reroute`` waits for its acknowledgements); how many."""
        await self.drain()
        again = [f for f in self.flights if not self._ok(f.acks)]
        self.flights.clear()
        self.failed = False
        log.warning("resending", records=len(again))
        for flight in again:
            await reroute(flight.event)
            flight.event.ack()
        return len(again)
