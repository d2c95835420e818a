"""The MOU router: a faust app over every ``cb.out.<participant>`` topic.

The agent only decodes, calls the core (``relay.admit`` / ``relay.decide``), produces and logs.
At-least-once: the offset of a record is committed only after its deliveries, audit record and
quarantine record were acknowledged by the broker (acks=all, idempotent producer); the router
does not wait for them before it routes the next record (window.py). State that
routing needs survives restarts in changelog-backed tables: where each event id was accepted
(redelivery vs replay), each sender's chain head, each case's consent and witness-hold flags.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import faust
from aiokafka.errors import KafkaError

from casebridge.core import relay
from casebridge.core.model import CaseState, Header
from casebridge.router import gaps, records
from casebridge.router.window import Window
from casebridge.runtime import watchdog
from casebridge.runtime.kafka import LazyProducer, create_app, raw_topic, retrying
from casebridge.runtime.logging import get_logger
from casebridge.runtime.refresh import follow_directory, until_current
from casebridge.runtime.settings import Settings
from casebridge.runtime.world import World

log = get_logger("casebridge.router")
Acks = asyncio.Future[Any] | None  # a record's sends, gathered; None when it needed none


@dataclass
class Router:
    """The running router's handles: app, tables, the durable producer and the trust world."""

    app: faust.App
    settings: Settings
    world: World
    seen: Any
    senders: Any
    cases: Any
    routed_to: Any  # outbox partition -> the last offset routed (gaps.py)
    producer: LazyProducer
    window: Window = field(default_factory=Window)  # records routed, their sends not yet acknowledged
    handled: int = 0  # records taken from the outboxes (the stall guard watches it move)

    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None = None
    ) -> Any:
        producer = await self.producer.get()
        return await producer.send(topic, value, key=key, headers=headers or [])


def create_router(settings: Settings, world: World, app_id: str = "casebridge-router") -> faust.App:
    """The router app; its agent subscribes to the outbox topic of every directory participant."""
    app = create_app(settings, app_id, topic_partitions=1)
    router = Router(
        app,
        settings,
        world,
        seen=app.Table("router-seen", partitions=1),
        senders=app.Table("router-senders", partitions=1),
        cases=app.Table("router-cases", partitions=1),
        routed_to=app.Table("router-offsets", partitions=1),
        producer=LazyProducer(app, settings),
    )
    outboxes = [f"{relay.OUT_PREFIX}{pid}" for pid in sorted(world.directory.participants)]
    source = raw_topic(app, *outboxes)

    async def route_events(stream: Any) -> AsyncIterator[None]:
        async for event in stream.noack().events():  # acked by the window once its sends are
            async with router.window.lock:
                await route_in_window(router, event)
            await router.window.room()
            yield None

    app.agent(source, name="route")(route_events)
    follow_directory(app, router)

    async def recover_when_idle() -> None:  # a failed send is resent even if no record follows it
        if router.window.failed and not router.window.lock.locked():
            async with router.window.lock:
                await recover(router)

    app.timer(1.0)(recover_when_idle)

    def directory_expired() -> bool:  # fail closed on purpose: not a stall
        return router.world.directory.expires_at <= datetime.now(UTC)

    app.task(lambda: watchdog.guard(app, settings, lambda: router.handled, directory_expired,
                                    relay.OUT_PREFIX, settings.stall_seconds))
    return app


async def route_in_window(router: Router, event: Any) -> None:
    """Route one record without waiting for its acknowledgements (window.py); first resend what
    failed and read back what the consumer skipped (gaps.py), so that order holds."""
    if router.window.failed:
        await recover(router)
    message = event.message
    missing = gaps.gap(router.routed_to.get(gaps.mark(message.topic, message.partition)), message.offset)
    if missing:
        await router.window.drain()
        if router.window.failed:
            await recover(router)
        await catch_up(router, message.topic, message.partition, missing)
    try:
        acks = await dispatch(router, event)
    except KafkaError as exc:  # sending failed before any acknowledgement was due
        log.warning("kafka_retry", what="route", error=type(exc).__name__)
        router.window.failed = True
        await recover(router)
        await route_now(router, event)
        event.ack()
        mark(router, message)
        return
    router.window.add(event, acks)
    mark(router, message)


async def recover(router: Router) -> None:
    """Resend, in order and with a new producer, every record in flight whose sends failed."""
    await router.window.drain()
    await router.producer.reset()
    resent = await router.window.recover(partial(route_now, router))
    log.warning("resent", records=resent)


def mark(router: Router, message: Any) -> None:
    key = gaps.mark(message.topic, message.partition)
    router.routed_to[key] = max(message.offset, router.routed_to.get(key, -1))
    router.handled += 1


async def route_now(router: Router, event: Any) -> None:
    """Route one record and wait for its acknowledgements; again, with a new producer, after a
    Kafka error."""

    async def once() -> None:
        acks = await dispatch(router, event)
        if acks is not None:
            await acks

    await retrying(router.producer, "route", once)


async def route_and_mark(router: Router, event: Any) -> None:
    await route_now(router, event)
    mark(router, event.message)


async def catch_up(router: Router, topic: str, partition: int, missing: range) -> None:
    """Route the records the consumer skipped, in order, before the one after them (gaps.py)."""
    log.warning("offsets_skipped", topic=topic, partition=partition, first=missing.start,
                last=missing.stop - 1, action="reading them back in order")
    try:
        routed = await gaps.catch_up(router.settings, topic, partition, missing,
                                     partial(route_and_mark, router), router.app.consumer.ack)
    except gaps.GapUnreadable as exc:
        log.error("gap_unreadable", why=exc.why, action=f"exit {watchdog.STALLED_EXIT}; restart")
        os._exit(watchdog.STALLED_EXIT)
    log.warning("gap_caught_up", topic=topic, partition=partition, routed=routed)


async def dispatch(router: Router, event: Any) -> Acks:
    """Route one record: its sends issued, gathered, not awaited (None: nothing to send). A fault
    of ours quarantines the record (never stops the stream, never loses it); a Kafka error is not
    the record's fault: it propagates, and the record is routed again."""
    try:
        return await handle(router, event.message, event.key, event.value)
    except KafkaError:
        raise
    except Exception as exc:
        return await contain(router, event.message, event.key, event.value, exc)


async def handle(router: Router, message: Any, key: bytes | None, value: bytes) -> Acks:
    """One record: decide, deliver or quarantine, audit; update the tables."""
    where = relay.Position(message.topic, message.partition, message.offset)
    await until_current(router, "routing")
    now = datetime.now(UTC)
    ctx = router.world.context(now)
    verified = relay.admit(value, ctx)
    if isinstance(verified, relay.Quarantine):
        return await quarantine(router, verified, where, key, value, now)
    header = verified.header
    outcome = relay.decide(
        verified,
        key,
        where,
        seen_at(router, header),
        sender_state(router, header),
        case_state(router, header),
        ctx,
    )
    if isinstance(outcome, relay.Quarantine):
        return await quarantine(router, outcome, where, key, value, now)
    if isinstance(outcome, relay.Duplicate):
        log.info(
            "duplicate_dropped",
            event_id=header.event_id,
            sender=header.sender,
            topic=where.topic,
            offset=where.offset,
            first_offset=outcome.first.offset,
        )
        return None
    return await forward(router, outcome, where, value, now)


async def forward(
    router: Router, outcome: relay.Forward, where: relay.Position, value: bytes, now: datetime
) -> Acks:
    header = outcome.header
    key = header.case_ref.encode()
    headers = records.cloudevent_headers(header)
    pending = [await router.send(relay.inbox_topic(r), key, value, headers) for r in outcome.recipients]
    audit = records.audit_record(
        router.world.schemas,
        header,
        outcome.envelope_hash,
        where,
        "delivered",
        None,
        outcome.recipients,
        outcome.flags,
        now,
        outcome.decision.agreements[0][0] if outcome.decision.agreements else None,
    )
    pending.append(await router.send(records.AUDIT_TOPIC, key, audit))
    router.seen[header.event_id] = [where.topic, where.partition, where.offset, outcome.envelope_hash.hex()]
    router.senders[header.sender] = [outcome.sender_state.sequence, outcome.sender_state.last_hash.hex()]
    case = {"consent": sorted(outcome.case_state.consent), "witness_hold": outcome.case_state.witness_hold}
    if router.cases.get(header.case_ref) != case:  # seldom changes: spare the changelog a record
        router.cases[header.case_ref] = case
    log.info(
        "routed",
        event_id=header.event_id,
        case_ref=header.case_ref,
        sender=header.sender,
        event_type=header.event_type,
        recipients=list(outcome.recipients),
        flags=list(outcome.flags),
        redelivery=outcome.redelivery,
        outcome="delivered",
    )
    return asyncio.gather(*pending)


async def quarantine(
    router: Router,
    outcome: relay.Quarantine,
    where: relay.Position,
    key: bytes | None,
    value: bytes,
    now: datetime,
) -> Acks:
    header = outcome.header
    pending = [
        await router.send(
            records.QUARANTINE_TOPIC,
            key,
            records.quarantine_record(router.world.schemas, outcome, where, value, now),
        )
    ]
    pending.append(
        await router.send(
            records.AUDIT_TOPIC,
            key,
            records.audit_record(
                router.world.schemas, header, None, where, "quarantined", outcome.code, (), (), now
            ),
        )
    )
    if header is not None and header.event_type != "receipt.rejected":
        receipt = router.world.rejection_receipt(header, outcome.code, outcome.why, now)
        if receipt is not None:
            pending.append(
                await router.send(relay.inbox_topic(header.sender), header.case_ref.encode(), receipt)
            )
    log.warning(
        "quarantined",
        code=outcome.code,
        event_id=header.event_id if header else None,
        sender=header.sender if header else None,
        topic=where.topic,
        offset=where.offset,
        outcome="quarantined",
    )
    return asyncio.gather(*pending)


async def contain(router: Router, message: Any, key: bytes | None, value: bytes, exc: Exception) -> Acks:
    """Keep a record the router failed on in quarantine, so it is neither lost nor retried forever."""
    where = relay.Position(message.topic, message.partition, message.offset)
    log.error("router_fault", topic=where.topic, offset=where.offset, error=type(exc).__name__)
    outcome = relay.Quarantine("malformed", f"the router failed on this record ({type(exc).__name__})")
    now = datetime.now(UTC)
    sent = await router.send(
        records.QUARANTINE_TOPIC,
        key,
        records.quarantine_record(router.world.schemas, outcome, where, value, now),
    )
    return asyncio.gather(sent)


def seen_at(router: Router, header: Header) -> relay.Accepted | None:
    value = router.seen.get(header.event_id)
    if not value:
        return None
    digest = bytes.fromhex(value[3]) if len(value) > 3 else b""
    return relay.Accepted(relay.Position(value[0], value[1], value[2]), digest)


def sender_state(router: Router, header: Header) -> relay.SenderState:
    value = router.senders.get(header.sender)
    return relay.SenderState(value[0], bytes.fromhex(value[1])) if value else relay.SenderState()


def case_state(router: Router, header: Header) -> CaseState:
    value = router.cases.get(header.case_ref)
    if not value:
        return CaseState()
    return CaseState(frozenset(value["consent"]), bool(value["witness_hold"]))
