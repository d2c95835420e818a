"""``casebridge monitor run``: a faust app over ``cb.audit`` and the secretariat's web page.

State: in-process, rebuilt from the topic at every start (the topic is the source of truth). A
task reads ``cb.audit`` from the beginning with a group-less consumer up to the end offsets of
the moment, while the agent follows the topic live in the ``casebridge-monitor`` group. Both
store each decoded record under its audit position (partition, offset), so a record seen by both
counts once, and the figures are recomputed from the records (at most once a second) when asked.
No faust table: the figures are derived from the whole stream (percentiles, chain order), and a
changelog would only copy ``cb.audit``.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import faust

from casebridge.core import avro
from casebridge.core.errors import CaseBridgeError
from casebridge.monitor import audit, figures
from casebridge.monitor import web as monitor_web
from casebridge.runtime import http
from casebridge.runtime.kafka import create_app, raw_topic
from casebridge.runtime.logging import get_logger
from casebridge.runtime.settings import Settings

log = get_logger("casebridge.monitor")
AUDIT_PARTITIONS = 3
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


def create_monitor(settings: Settings, schemas: avro.SchemaSet, port: int,
                   bucket: timedelta = timedelta(minutes=1), host: str = "127.0.0.1",
                   topic: str = audit.AUDIT_TOPIC, app_id: str = "casebridge-monitor") -> faust.App:
    """The monitor's faust app: the live agent, the rebuild task and the web server.

    ``app_id`` is the agent's consumer group: two monitors with one id would split the partitions
    between them, so a second instance needs its own.
    """
    app = create_app(settings, app_id, topic_partitions=AUDIT_PARTITIONS)
    monitor = Monitor(bucket)

    async def watch(stream: Any) -> Any:
        async for event in stream.events():
            take(monitor, schemas, event.message.partition, event.message.offset, event.value)
            yield None

    app.agent(raw_topic(app, topic), name="audit")(watch)
    app.task(lambda: rebuild(monitor, settings, schemas, topic))
    app.task(lambda: serve_http(monitor, host, port, http.server_tls(settings)))
    return app


async def rebuild(monitor: Monitor, settings: Settings, schemas: avro.SchemaSet,
                  topic: str = audit.AUDIT_TOPIC) -> None:
    """Read the audit topic from its beginning up to now into the monitor's records."""
    messages = await audit.snapshot(settings, topic)
    for partition, offset, value in messages:
        take(monitor, schemas, partition, offset, value)
    log.info("monitor_rebuilt", records=len(messages), undecodable=monitor.undecodable)


async def figures_from_topic(settings: Settings, schemas: avro.SchemaSet, now: datetime,
                             topic: str = audit.AUDIT_TOPIC) -> figures.Figures:
    """The figures of everything on the audit topic now (one read, no worker: for the demo's summary)."""
    log = await audit.read_topic(settings, schemas, topic)
    return figures.compute(log.partitions, now)


async def serve_http(monitor: Monitor, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
    app = monitor_web.http_app(lambda: figures_now(monitor, datetime.now(UTC)))
    log.info("monitor_listening", url=http.base_url(host, port, tls is not None) + "/")
    await http.serve_forever(app, host, port, tls)
