"""The deadline tracker: a faust app over ``cb.audit`` with a changelog-backed table of obligations.

Each delivered event may open obligations (``deadlines.obligations``) or close one (the answering
event names the opening one in ``correlation_id``). A timer sends a tick to every partition of
``cb.deadlines.tick``; the agent handles a tick inside the stream (faust tables may only change
there) for the cases of that partition, and sends ``deadline.approaching`` / ``sla.breached``
sealed by ``REG.DEADLINES`` to the responsible focal point, the waiting sender and the
secretariat, with a metadata record on ``cb.audit``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import faust
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from casebridge.core import avro, issued, sealing, topics, tracker
from casebridge.core.deadlines import Calendar, Obligation
from casebridge.core.model import Header
from casebridge.runtime.kafka import LazyProducer, create_app, raw_topic, retrying
from casebridge.runtime.logging import get_logger
from casebridge.runtime.settings import Settings
from casebridge.runtime.world import World

log = get_logger("casebridge.deadlines")
TRACKER = issued.TRACKER
SECRETARIAT = "REG.SECRETARIAT"
TICK_TOPIC = topics.DEADLINES_TICK
AUDIT_PARTITIONS = 3


def to_json(t: tracker.Tracked) -> dict[str, Any]:
    o = t.obligation
    return {
        "name": o.name,
        "party": o.party,
        "due": o.due.isoformat(),
        "closes_on": o.closes_on,
        "opened_by": o.opened_by,
        "case_ref": o.case_ref,
        "agreement": list(o.agreement),
        "working_days": o.working_days,
        "source": o.source,
        "clause": o.clause,
        "opened_at": t.opened_at.isoformat(),
        "scaled_due": t.due.isoformat(),
        "approaching_sent": t.approaching_sent,
        "breached_sent": t.breached_sent,
    }


def from_json(d: dict[str, Any]) -> tracker.Tracked:
    o = Obligation(
        d["name"],
        d["party"],
        datetime.fromisoformat(d["due"]),
        d["closes_on"],
        d["opened_by"],
        d["case_ref"],
        (d["agreement"][0], d["agreement"][1]),
        d["working_days"],
        d["source"],
        d["clause"],
    )
    return tracker.Tracked(
        o,
        datetime.fromisoformat(d["opened_at"]),
        datetime.fromisoformat(d["scaled_due"]),
        d["approaching_sent"],
        d["breached_sent"],
    )


def header_of(audit: dict[str, Any]) -> Header:
    """The header fields the tracker needs, from a metadata-only audit record."""
    return Header(
        event_id=audit["event_id"],
        event_type=audit["event_type"],
        sender=audit["sender"],
        sender_key_id="",
        created_at=audit["created_at"],
        case_ref=audit["case_ref"],
        to=tuple(audit.get("to") or ()),
        correlation_id=audit.get("correlation_id"),
        agreement_id=audit.get("agreement_id"),
    )


def create_tracker(
    settings: Settings, world: World, calendars: dict[str, Calendar], scale: float, tick_seconds: float = 1.0
) -> faust.App:
    app = create_app(settings, "casebridge-deadlines", topic_partitions=AUDIT_PARTITIONS)
    table = app.Table("deadlines-open", default=list, partitions=AUDIT_PARTITIONS)
    source = raw_topic(app, topics.AUDIT, TICK_TOPIC)
    agreements = {a.id: a for a in world.agreements}
    partitioner = DefaultPartitioner()
    lazy = LazyProducer(app, settings)
    producer = lazy.get

    async def track(stream: Any) -> Any:
        async for event in stream.events():
            if event.message.topic == TICK_TOPIC:
                await on_tick(event.message.partition)
            else:
                on_audit(avro.decode(world.schemas, event.value, issued.AUDIT))
            yield None

    def on_audit(audit: dict[str, Any]) -> None:
        if audit["outcome"] != "delivered" or not audit.get("event_id"):
            return
        header = header_of(audit)
        open_now = [from_json(d) for d in table[header.case_ref]]
        still, closed = tracker.on_delivered(
            header, agreements.get(header.agreement_id or ""), open_now, calendars, scale
        )
        table[header.case_ref] = [to_json(t) for t in still]
        for done in closed:
            log.info(
                "obligation_met",
                case_ref=header.case_ref,
                obligation=done.obligation.name,
                party=done.obligation.party,
            )

    async def on_tick(partition: int) -> None:
        now = datetime.now(UTC)
        for case_ref in [k for k in list(table.keys()) if table[k]]:
            if partitioner(case_ref.encode(), list(range(AUDIT_PARTITIONS)), []) != partition:
                continue
            updated, raised = tracker.alerts([from_json(d) for d in table[case_ref]], now)
            if raised:  # sent (and acknowledged) before the table says so: an alert is never lost

                async def send_all(raised: list[tracker.Alert] = raised) -> None:
                    p = await producer()
                    await asyncio.gather(*[send_alert(p, world, a, now) for a in raised])

                await retrying(lazy, "alerts", send_all)
                table[case_ref] = [to_json(t) for t in updated]

    app.agent(source, name="track")(track)

    async def tick() -> None:
        async def send_ticks() -> None:
            p = await producer()
            sent = [await p.send(TICK_TOPIC, b"tick", partition=n) for n in range(AUDIT_PARTITIONS)]
            await asyncio.gather(*sent)

        await retrying(lazy, "tick", send_ticks)

    app.timer(tick_seconds)(tick)

    return app


def responsible(world: World, obligation: Obligation, opener: str | None) -> tuple[str, ...]:
    """The party's government focal point(s), the waiting sender and the secretariat."""
    focal = [
        p.id
        for p in world.directory.participants.values()
        if p.country == obligation.party and p.role == "government"
    ]
    return tuple(
        sorted({*focal, *([opener] if opener else []), SECRETARIAT} & world.directory.participants.keys())
    )


async def send_alert(producer: AIOKafkaProducer, world: World, alert: tracker.Alert, now: datetime) -> None:
    o = alert.tracked.obligation
    recipients = responsible(world, o, None)
    operational = {"obligation": o.name, "due_at": alert.tracked.due, "responsible": o.party,
                   "agreement_id": o.agreement[0], "clause": o.clause, "note": None}
    header, data = issued.alert(world.schemas, world.directory, world.identity(TRACKER), alert.kind,
                                operational, o.case_ref, o.opened_by, o.agreement, recipients, now)
    key = o.case_ref.encode()
    headers = issued.cloudevent_headers(header)
    pending = [await producer.send(topics.inbox(r), data, key=key, headers=headers) for r in recipients]
    audit = issued.audit_record(
        world.schemas, header, sealing.envelope_hash(data), ("deadline-tracker", 0, 0), alert.kind, None,
        recipients, (), now
    )
    pending.append(await producer.send(topics.AUDIT, audit, key=key))
    await asyncio.gather(*pending)
    log.warning(
        alert.kind.replace(".", "_"),
        case_ref=o.case_ref,
        obligation=o.name,
        party=o.party,
        due=alert.tracked.due.isoformat(),
    )
