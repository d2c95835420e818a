"""``casebridge monitor run``: a follower of the audit topics and the secretariat's web page.

State: in-process, rebuilt from the topics at every start (they are the source of truth). A thread
reads every partition of every audit topic (``audit.AUDIT_PATTERN``: ``cb.audit`` and, in a
federation, each country's mirrored ``<alias>.cb.audit``) from its beginning, committed records
only, with a group-less consumer, and keeps going live; it looks for new matching topics and
partitions every ``DISCOVER`` seconds (a country joining the federation). Each decoded record is
stored under its audit position (topic, partition, offset), and the figures are recomputed from the
records (at most once a second) when asked. No state table: the figures are derived from the whole
stream (percentiles, chain order), and a changelog would only copy the audit topics. Any number of
monitors can run: none joins a group.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from casebridge.core import access, avro
from casebridge.core.errors import CaseBridgeError
from casebridge.monitor import audit, figures
from casebridge.monitor import web as monitor_web
from casebridge.runtime import ckafka, http
from casebridge.runtime.logging import get_logger
from casebridge.runtime.settings import Settings

log = get_logger("casebridge.monitor")
REFRESH = timedelta(seconds=1)
DISCOVER = 10.0  # seconds between two looks for new audit topics and partitions
AuditPosition = tuple[str, int]  # (audit topic, partition)


@dataclass
class Monitor:
    """The records read so far, by audit topic, partition and offset, and the last figures computed."""

    bucket: timedelta = timedelta(minutes=1)
    records: dict[AuditPosition, dict[int, Mapping[str, Any]]] = field(default_factory=dict)
    undecodable: int = 0
    cached: figures.Figures | None = None
    cached_count: int = -1

    @property
    def count(self) -> int:
        return sum(len(part) for part in self.records.values())


def remember(monitor: Monitor, topic: str, partition: int, offset: int, record: Mapping[str, Any]) -> None:
    monitor.records.setdefault((topic, partition), {}).setdefault(offset, record)


def take(monitor: Monitor, schemas: avro.SchemaSet, topic: str, partition: int, offset: int,
         value: bytes) -> None:
    """Decode one audit record and keep it; an undecodable one is counted and logged."""
    try:
        remember(monitor, topic, partition, offset, avro.decode(schemas, value, audit.AUDIT))
    except CaseBridgeError as exc:
        monitor.undecodable += 1
        log.warning("audit_undecodable", topic=topic, partition=partition, offset=offset, code=exc.code)


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


def follow_audit(settings: Settings, schemas: avro.SchemaSet, monitor: Monitor, pattern: str,
                 stop: threading.Event) -> threading.Thread:
    """A thread that reads every partition of every topic ``pattern`` matches from its beginning
    (committed records, no group, nothing committed: the monitor rebuilds at every start), keeps
    each record, and adds the topics and partitions that appear later."""

    def run() -> None:
        reader = ckafka.consumer(settings, access.app_id(access.MONITOR))  # assigned: joins no group
        assigned: set[AuditPosition] = set()
        looked = float("-inf")
        try:
            while not stop.is_set():
                if time.monotonic() - looked >= DISCOVER:
                    assigned |= discover(reader, pattern, assigned)
                    looked = time.monotonic()
                for m in reader.consume(1000, 0.5):
                    if m.error() is None and m.value() is not None:
                        take(monitor, schemas, m.topic(), m.partition(), m.offset(), m.value())
        finally:
            reader.close()

    thread = threading.Thread(target=run, name="monitor-audit", daemon=True)
    thread.start()
    return thread


def discover(reader: Consumer, pattern: str, assigned: set[AuditPosition]) -> set[AuditPosition]:
    """Assign, from their beginning, the partitions of matching topics not assigned yet; those added."""
    known = reader.list_topics(timeout=30).topics
    new = {(name, p) for name in audit.matching(known, pattern) for p in known[name].partitions} - assigned
    if new:
        reader.incremental_assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in sorted(new)])
        for name in sorted({t for t, _ in new}):
            log.info("monitor_following", topic=name, partitions=sum(1 for t, _ in new if t == name))
    return new


def run(settings: Settings, schemas: avro.SchemaSet, port: int, bucket: timedelta = timedelta(minutes=1),
        host: str = "127.0.0.1", pattern: str = audit.AUDIT_PATTERN) -> int:
    """``casebridge monitor run``: follow the audit topics and serve the page until SIGTERM / SIGINT."""
    monitor, stop = Monitor(bucket), threading.Event()

    async def serve() -> None:
        done = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, done.set)
        follower = follow_audit(settings, schemas, monitor, pattern, stop)
        web_task = asyncio.create_task(serve_http(monitor, host, port, http.server_tls(settings)))
        await done.wait()
        stop.set()
        web_task.cancel()
        follower.join(3)

    asyncio.run(serve())
    log.info("monitor_stopped")
    return 0


async def figures_from_topic(settings: Settings, schemas: avro.SchemaSet, now: datetime,
                             pattern: str = audit.AUDIT_PATTERN) -> figures.Figures:
    """The figures of everything on the audit topics now (one read, no worker: for the demo's summary)."""
    log = await audit.read_topics(settings, schemas, pattern)
    return figures.compute(log.partitions, now)


async def serve_http(monitor: Monitor, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
    app = monitor_web.http_app(lambda: figures_now(monitor, datetime.now(UTC)))
    log.info("monitor_listening", url=http.base_url(host, port, tls is not None) + "/")
    await http.serve_forever(app, host, port, tls)
