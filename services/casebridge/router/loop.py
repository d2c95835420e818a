"""The router as a processor of the transactional loop (``runtime.txloop``): it consumes every
``cb.out.*`` topic (in a federation: its country's outboxes and the corridors into it), steps
each record (step.py) and keeps its tables per partition in ``cb.router.state``. Every tick it
forgets event ids too old to be accepted any more.

The Ed25519 checks of a batch run in a child process (``runtime.verifier``) a few envelopes
ahead of the step that needs them, so the loop's thread does not wait for them. Threads could not
do it: a pool of two verifier threads cost more CPU per envelope on 2 cores (414-438 against
338-382 us, at the same rate: the Python half of each check waited for the GIL) and was removed.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from casebridge.core import relay, sealing, topics
from casebridge.core.issued import ROUTER
from casebridge.core.stream import Change, Record, Step, Tables
from casebridge.router import state
from casebridge.router.step import Ctx, expire, step
from casebridge.runtime.logging import get_logger
from casebridge.runtime.settings import Settings
from casebridge.runtime.txloop import RESTART_EXIT, Fatal, Loop
from casebridge.runtime.verifier import KEY_LEN, SIG_LEN, Verifier
from casebridge.runtime.world import World

log = get_logger("casebridge.router")
GROUP = "casebridge-router"
OUTBOXES = r"^cb\.out\..+"  # every outbox, also of participants added later
AHEAD_FIRST, AHEAD_EACH = 16, 128  # envelopes in a batch's first request to the verifier, in each after it


def subscription(country: str | None) -> list[str]:
    """Every outbox on one shared cluster; in a federation, the outboxes of the country's own
    participants and every corridor into it (also of partners added later)."""
    if country is None:
        return [OUTBOXES]
    return [rf"^cb\.out\.{country}\..+", rf"^([A-Z]+\.)?cb\.xb\.[A-Z]+\.{country}$"]


class RouterProcessor:
    """The router's part of the loop: its topics, tables, context and step."""

    name = "router"
    changelog = topics.ROUTER_STATE
    tick_every = 60.0
    routine = frozenset({"delivered"})  # every delivery has its audit record; counted per batch

    def __init__(self, world: World, group: str = GROUP, country: str | None = None) -> None:
        self.world, self.group, self.country = world, group, country
        self.subscription = subscription(country)
        self.identity = world.identity(ROUTER)
        self.verifier = Verifier()
        self.verifier.running()  # started with the worker, not inside its first batch

    def new_tables(self) -> Tables:
        return state.new_tables()

    def encode(self, change: Change) -> tuple[bytes, bytes | None]:
        return state.encode(change)

    def decode(self, key: bytes, value: bytes | None) -> Change:
        return state.decode(key, value)

    def context(self, now: datetime, poison: frozenset[tuple[str, int, int]]) -> Ctx:
        return Ctx(replace(self.world.context(now), country=self.country), self.identity, poison=poison)

    def prepare(self, records: list[Record], ctx: Ctx) -> Iterator[Any]:
        """Each record's ``relay.admit``, in order, as the step reaches it; the signatures are
        checked by the verifier's child two requests ahead."""
        return admitted([r.value or b"" for r in records], ctx.relay, self.verifier)

    def close(self) -> None:
        self.verifier.close()

    def step(self, tables: Tables, record: Record, ctx: Ctx, prepared: Any) -> Step:
        return step(tables, record, ctx, prepared)

    def tick(self, tables: Tables, partition: int, ctx: Ctx) -> Step:
        return expire(tables, partition, ctx)

    def blocked(self, now: datetime) -> str | None:
        expires = self.world.directory.expires_at
        if expires <= now:  # fail closed, as X-Road does with an expired global configuration
            return f"the directory expired at {expires.isoformat()}: publish a current one on cb.directory"
        return None


def admitted(values: Sequence[bytes], ctx: relay.Context, verifier: Verifier
             ) -> Iterator[sealing.VerifiedEnvelope | relay.Quarantine]:
    """``relay.admit`` of each value, with its signature checked ahead by ``verifier`` (two
    requests in flight while the caller steps the records before them); a value whose check did
    not come back is checked by ``admit`` itself."""
    parts = [sealing.signed_parts(v, ctx.directory, ctx.schemas) for v in values]
    bounds = [0, *range(min(AHEAD_FIRST, len(values)), len(values), AHEAD_EACH), len(values)]
    spans = list(itertools.pairwise(bounds))
    sent: list[tuple[int | None, list[int]]] = []

    def send(span: tuple[int, int]) -> None:
        wanted = [i for i in range(*span) if checkable(parts[i])]
        triples = [parts[i] for i in wanted]
        sent.append((verifier.submit(triples) if wanted else None, wanted))  # type: ignore[arg-type]

    for span in spans[:2]:
        send(span)
    for k, (start, end) in enumerate(spans):
        if k + 2 < len(spans):
            send(spans[k + 2])
        ticket, wanted = sent[k]
        verdicts = verifier.result(ticket, len(wanted)) if wanted else None
        checked: dict[int, sealing.Checked] = {}
        if verdicts is not None:
            checked = {i: (*parts[i], bool(v)) for i, v in zip(wanted, verdicts, strict=True)}  # type: ignore[misc]
        for i in range(start, end):
            yield relay.admit(values[i], ctx, checked.get(i))


def checkable(parts: tuple[bytes, bytes, bytes] | None) -> bool:
    """Whether the child may check it: a key and signature of the right sizes (any other is
    refused by ``admit`` itself, with its own code)."""
    return parts is not None and len(parts[0]) == KEY_LEN and len(parts[1]) == SIG_LEN


class Router(Loop):
    """One router worker; ``world`` may be replaced while it runs (directory updates)."""

    def __init__(self, settings: Settings, world: World, *, group: str = GROUP,
                 before_commit: Callable[[Sequence[Record]], bool] | None = None) -> None:
        self.processor_ = RouterProcessor(world, group, country=settings.country or None)
        super().__init__(settings, self.processor_, before_commit=before_commit)

    @property
    def world(self) -> World:
        return self.processor_.world

    @world.setter
    def world(self, world: World) -> None:
        self.processor_.world = world

    @property
    def routed(self) -> int:
        return self.handled

    @property
    def states(self) -> dict[int, Tables]:
        return self.tables


def run(settings: Settings, world: World, stop: threading.Event) -> int:
    """A router worker until ``stop``; the exit code."""
    from casebridge.runtime.ckafka import follow_directory

    try:
        router = Router(settings, world)
    except Fatal as exc:  # refused at the start (its rights): say so, let a supervisor try again
        log.error("router_fatal", error=str(exc), action=f"exit {RESTART_EXIT}")
        return RESTART_EXIT
    follow_directory(settings, router, stop, GROUP)
    return router.run(stop)
