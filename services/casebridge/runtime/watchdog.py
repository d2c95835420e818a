"""A stall guard for a faust worker: records wait, nothing is handled, so exit and be restarted.

Seen in the fault tests (router SIGKILLed three times, then a rebalance as the dead members'
sessions expired): faust-streaming 0.15.3 finished its table recovery but never fetched one
outbox partition again; the agent sat idle with hundreds of records behind it and the group's
committed offset frozen. No error, no log line: a silent stop. At-least-once makes a restart
safe (uncommitted records are read again; redeliveries are recognised), so the guard compares the
group's committed offsets with the end offsets and, when records wait and the handled count has
not moved for ``patience`` seconds (not while rebalancing, recovering or deliberately waiting),
logs ``worker_stalled`` and exits with ``STALLED_EXIT`` for its supervisor to start it again.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from casebridge.runtime.kafka import new_consumer
from casebridge.runtime.logging import get_logger
from casebridge.runtime.settings import Settings

STALLED_EXIT = 75  # EX_TEMPFAIL: try again
log = get_logger("casebridge.watchdog")


async def behind(settings: Settings, group: str, tps: list[TopicPartition]) -> dict[str, int]:
    """Records waiting per topic-partition: end offset minus the group's committed offset."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, **settings.kafka_auth)
    consumer = new_consumer(settings, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
        await admin.close()
    waiting = {}
    for tp in tps:
        done = committed[tp].offset if tp in committed and committed[tp].offset >= 0 else 0
        if ends.get(tp, 0) > done:
            waiting[f"{tp.topic}/{tp.partition}"] = ends[tp] - done
    return waiting


async def guard(
    app: Any,
    settings: Settings,
    handled: Callable[[], int],
    waiting_on_purpose: Callable[[], bool],
    prefix: str,
    patience: float,
    exit_now: Callable[[int], None] = os._exit,
) -> None:
    """Run forever inside the worker; exit the process when it has stalled for ``patience`` s."""
    last, since = handled(), time.monotonic()
    while True:
        await asyncio.sleep(min(10.0, patience / 3))
        count = handled()
        if count != last or app.rebalancing or app.in_recovery or waiting_on_purpose():
            last, since = count, time.monotonic()
            continue
        tps = [TopicPartition(tp.topic, tp.partition) for tp in app.consumer.assignment()
               if tp.topic.startswith(prefix)]
        try:
            waiting = await behind(settings, app.conf.id, tps) if tps else {}
        except Exception as exc:  # the broker is away: not a stall of ours
            log.warning("watchdog_check_failed", error=type(exc).__name__)
            since = time.monotonic()
            continue
        if not waiting:
            since = time.monotonic()
            continue
        idle = time.monotonic() - since
        if idle >= patience:
            log.error("worker_stalled", app=app.conf.id, idle_seconds=round(idle), waiting=waiting,
                      handled=count, action=f"exit {STALLED_EXIT}; the supervisor starts it again")
            exit_now(STALLED_EXIT)
            return

