"""``casebridge audit verify``: read the audit stream (topics or file) and check every sender's chain.

The audit topics are every topic whose name matches a pattern: by default ``cb.audit`` and, on the
secretariat's cluster of a federation, each ``<alias>.cb.audit`` MirrorMaker 2 copied from a
country's cluster (DefaultReplicationPolicy: source alias, a dot, the topic). Each is read from the
beginning with a group-less consumer up to the end offsets it had when the read began (a snapshot),
partition by partition in offset order. A file holds one audit record per line as JSON
(``casebridge audit dump`` writes it): bytes as hex, times as ISO 8601.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from casebridge.core import avro, topics
from casebridge.core.errors import CaseBridgeError
from casebridge.monitor import chains
from casebridge.runtime.kafka import new_consumer
from casebridge.runtime.settings import Settings

AUDIT_TOPIC = topics.AUDIT
AUDIT_PATTERN = rf"(?:[A-Za-z0-9_-]+\.)?{re.escape(topics.AUDIT)}"  # cb.audit and <alias>.cb.audit
AUDIT = "casebridge.audit.AuditRecord"
BYTES_FIELDS = ("prev_hash", "envelope_hash")
TIME_FIELDS = ("decided_at", "created_at")


@dataclass(frozen=True)
class AuditLog:
    """Decoded audit records grouped by audit partition (read order) and what could not be read."""

    partitions: tuple[tuple[Mapping[str, Any], ...], ...]
    undecodable: tuple[str, ...]  # "[<topic>/]<partition>@<offset>: <code>" or "line <n>: <why>"


def literal(topic: str) -> str:
    """The pattern that matches ``topic`` only."""
    return re.escape(topic)


def matching(names: Iterable[str], pattern: str) -> list[str]:
    """The names the whole of ``pattern`` matches, sorted."""
    return sorted(name for name in names if re.fullmatch(pattern, name))


def record_to_json(record: Mapping[str, Any]) -> dict[str, Any]:
    """A decoded audit record as a JSON object (bytes as hex, times as ISO 8601)."""
    out = dict(record)
    for name in BYTES_FIELDS:
        out[name] = out[name].hex() if isinstance(out.get(name), bytes) else out.get(name)
    for name in TIME_FIELDS:
        out[name] = out[name].isoformat() if isinstance(out.get(name), datetime) else out.get(name)
    return out


def record_from_json(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The reverse of ``record_to_json``."""
    record = dict(doc)
    for name in BYTES_FIELDS:
        record[name] = bytes.fromhex(record[name]) if isinstance(record.get(name), str) else None
    for name in TIME_FIELDS:
        record[name] = datetime.fromisoformat(record[name]) if record.get(name) else None
    return record


def read_file(path: Path) -> AuditLog:
    """Audit records from a JSON-lines file (one partition, in line order)."""
    records: list[Mapping[str, Any]] = []
    bad: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(record_from_json(json.loads(line)))
        except (ValueError, TypeError, AttributeError) as exc:
            bad.append(f"line {number}: {type(exc).__name__}")
    return AuditLog((tuple(records),), tuple(bad))


def write_file(path: Path, log: AuditLog) -> int:
    """Write every record as one JSON line; the number written."""
    lines = [json.dumps(record_to_json(r), sort_keys=True) for part in log.partitions for r in part]
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return len(lines)


def decode_all(schemas: avro.SchemaSet, messages: Iterable[tuple[int, int, bytes]]) -> AuditLog:
    """Decode (partition, offset, value) triples, already in offset order per partition."""
    parts: dict[int, list[Mapping[str, Any]]] = {}
    bad: list[str] = []
    for partition, offset, value in messages:
        try:
            parts.setdefault(partition, []).append(avro.decode(schemas, value, AUDIT))
        except CaseBridgeError as exc:
            bad.append(f"{partition}@{offset}: {exc.code}")
    return AuditLog(tuple(tuple(parts[p]) for p in sorted(parts)), tuple(bad))


async def read_topic(settings: Settings, schemas: avro.SchemaSet, topic: str = AUDIT_TOPIC) -> AuditLog:
    """Everything on ``topic`` up to the end offsets at the start of the read."""
    return decode_all(schemas, await snapshot(settings, topic))


async def read_topics(settings: Settings, schemas: avro.SchemaSet, pattern: str = AUDIT_PATTERN) -> AuditLog:
    """Everything on each topic ``pattern`` matches (sorted by name), each up to its end offsets at
    the start of its read; an undecodable record is named with its topic."""
    names = await topics_matching(settings, pattern)
    logs = {topic: await read_topic(settings, schemas, topic) for topic in names}
    return AuditLog(tuple(part for log in logs.values() for part in log.partitions),
                    tuple(f"{topic}/{where}" for topic, log in logs.items() for where in log.undecodable))


async def topics_matching(settings: Settings, pattern: str) -> list[str]:
    """The topics of the cluster (those the principal may describe) that ``pattern`` matches."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, **settings.kafka_auth)
    await admin.start()
    try:
        return matching(await admin.list_topics(), pattern)
    finally:
        await admin.close()


async def snapshot(settings: Settings, topic: str) -> list[tuple[int, int, bytes]]:
    """(partition, offset, value) of every record up to the end offsets seen at the start."""
    parts = [TopicPartition(topic, p) for p in await partitions_of(settings, topic)]
    if not parts:
        return []
    consumer = new_consumer(settings, group_id=None)
    await consumer.start()
    try:
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        return await drain(consumer, ends)
    finally:
        await consumer.stop()


async def partitions_of(settings: Settings, topic: str) -> list[int]:
    """The partition numbers of ``topic`` (none when it does not exist)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, **settings.kafka_auth)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(p["partition"] for d in described if d["error_code"] == 0 for p in d["partitions"])


async def drain(consumer: Any, ends: Mapping[Any, int]) -> list[tuple[int, int, bytes]]:
    got: list[tuple[int, int, bytes]] = []
    while await behind(consumer, ends):
        batch = await consumer.getmany(timeout_ms=1000)
        for tp, messages in batch.items():
            got += [(tp.partition, m.offset, m.value) for m in messages if m.offset < ends[tp]]
    return sorted(got, key=lambda m: (m[0], m[1]))


async def behind(consumer: Any, ends: Mapping[Any, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return True
    return False


def report(log: AuditLog, statuses: Sequence[chains.ChainStatus]) -> list[str]:
    """Human-readable lines: one per (sender, partition) chain, one per finding, one per
    unreadable record."""
    lines = [f"undecodable {where}" for where in log.undecodable]
    for status in statuses:
        chain = f"{status.sender}/{status.partition}"
        lines.append(f"{chain}: {status.status} ({status.links} links, last sequence "
                     f"{status.last_sequence})")
        lines += [f"  {f.kind} at sequence {f.sequence}{' ' + f.position if f.position else ''}: {f.detail}"
                  for f in status.findings]
    return lines


def verdict(log: AuditLog, statuses: Sequence[chains.ChainStatus]) -> int:
    """0 when every chain verifies and every record was readable, 1 otherwise."""
    return 0 if not log.undecodable and all(s.status == "ok" for s in statuses) else 1
