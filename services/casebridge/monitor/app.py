"""``casebridge monitor run``: a follower of ``cb.audit`` and the secretariat's web page.

State: in-process, rebuilt from the topic at every start (the topic is the source of truth). A
thread reads every partition of ``cb.audit`` from its beginning, committed records only, with a
group-less consumer, and keeps going live; each decoded record is stored under its audit position
(partition, offset), and the figures are recomputed from the records (at most once a second) when
asked. No state table: the figures are derived from the whole stream (percentiles, chain order),
and a changelog would only copy ``cb.audit``. Any number of monitors can run: none joins a group.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from casebridge.core import access, avro
from casebridge.core.errors import CaseBridgeError
from casebridge.monitor import audit, figures
from casebridge.monitor import web as monitor_web
from casebridge.runtime import ckafka, http
from casebridge.runtime.logging import get_logger
from casebridge.runtime.settings import Settings

log = get_logger("casebridge.monitor")
REFRESH = timedelta(seconds=1)


@dataclass
class Monitor:
    """The records read so far, by audit partition and offset, and the last figures computed."""

    bucket: timedelta = timedelta(minutes=1)
    records: dict[int, dict[int, Mapping[str, Any]]] = field(default_factory=dict)
    undecodable: int = 0
    cached: figures.Figures | None = None
    cached_count: int = -1

    @property
    def count(self) -> int:
        return sum(len(part) for part in self.records.values())


def remember(monitor: Monitor, partition: int, offset: int, record: Mapping[str, Any]) -> None:
    monitor.records.setdefault(partition, {}).setdefault(offset, record)


def take(monitor: Monitor, schemas: avro.SchemaSet, partition: int, offset: int, value: bytes) -> None:
    """Decode one audit record and keep it; an undecodable one is counted and logged."""
    try:
        remember(monitor, partition, offset, avro.decode(schemas, value, audit.AUDIT))
    except CaseBridgeError as exc:
        monitor.undecodable += 1
        log.warning("audit_undecodable", partition=partition, offset=offset, code=exc.code)


def partitions(monitor: Monitor) -> list[list[Mapping[str, Any]]]:
    return [[part[o] for o in sorted(part)] for _, part in sorted(monitor.records.items())]


def figures_now(monitor: Monitor, now: datetime) -> figures.Figures:
    """The figures, recomputed when records arrived or the last ones are older than ``REFRESH``."""
    cached = monitor.cached
    if cached is not None and monitor.cached_count == monitor.count and now - cached.generated_at < REFRESH:
        return cached
    monitor.cached_count = monitor.count
    monitor.cached = figures.compute(partitions(monitor), now, monitor.bucket)
    return monitor.cached


def follow_audit(settings: Settings, schemas: avro.SchemaSet, monitor: Monitor, topic: str,
                 stop: threading.Event) -> threading.Thread:
    """A thread that reads every partition of ``topic`` from its beginning (committed records, no
    group, nothing committed: the monitor rebuilds at every start) and keeps each record."""

    def run() -> None:
        reader = ckafka.consumer(settings, access.app_id(access.MONITOR))  # assigned: joins no group
        try:
            parts = reader.list_topics(topic, timeout=30).topics[topic].partitions
            reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(parts)])
            log.info("monitor_following", topic=topic, partitions=len(parts))
            while not stop.is_set():
                for m in reader.consume(1000, 0.5):
                    if m.error() is None and m.value() is not None:
                        take(monitor, schemas, m.partition(), m.offset(), m.value())
        finally:
            reader.close()

    thread = threading.Thread(target=run, name="monitor-audit", daemon=True)
    thread.start()
    return thread


def run(settings: Settings, schemas: avro.SchemaSet, port: int, bucket: timedelta = timedelta(minutes=1),
        host: str = "127.0.0.1", topic: str = audit.AUDIT_TOPIC) -> int:
    """``casebridge monitor run``: follow the audit topic and serve the page until SIGTERM / SIGINT."""
    monitor, stop = Monitor(bucket), threading.Event()

    async def serve() -> None:
        done = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, done.set)
        follower = follow_audit(settings, schemas, monitor, topic, stop)
        web_task = asyncio.create_task(serve_http(monitor, host, port, http.server_tls(settings)))
        await done.wait()
        stop.set()
        web_task.cancel()
        follower.join(3)

    asyncio.run(serve())
    log.info("monitor_stopped")
    return 0


async def figures_from_topic(settings: Settings, schemas: avro.SchemaSet, now: datetime,
                             topic: str = audit.AUDIT_TOPIC) -> figures.Figures:
    """The figures of everything on the audit topic now (one read, no worker: for the demo's summary)."""
    log = await audit.read_topic(settings, schemas, topic)
    return figures.compute(log.partitions, now)


async def serve_http(monitor: Monitor, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
    app = monitor_web.http_app(lambda: figures_now(monitor, datetime.now(UTC)))
    log.info("monitor_listening", url=http.base_url(host, port, tls is not None) + "/")
    await http.serve_forever(app, host, port, tls)
