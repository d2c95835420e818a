"""What the router writes besides the delivered envelopes: audit and quarantine records, ce_* headers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from casebridge.core import avro, relay
from casebridge.core.model import Header

AUDIT_TOPIC = "cb.audit"
QUARANTINE_TOPIC = "cb.quarantine"
AUDIT = "casebridge.audit.AuditRecord"
HEADER_FIELDS = (
    "event_id",
    "event_type",
    "sender",
    "case_ref",
    "created_at",
    "sequence",
    "prev_hash",
    "correlation_id",
    "agreement_id",
)
QUARANTINED = "casebridge.audit.QuarantineRecord"


def cloudevent_headers(header: Header) -> list[tuple[str, bytes]]:
    """CloudEvents Kafka-binding headers for tooling: ids and types only, no personal data."""
    values = {
        "ce_specversion": "1.0",
        "ce_id": header.event_id,
        "ce_type": header.event_type,
        "ce_source": header.sender,
        "ce_time": header.created_at.isoformat(),
        "ce_subject": header.case_ref,
        "content-type": "application/avro",
    }
    return [(name, value.encode()) for name, value in values.items()]


def audit_record(
    schemas: avro.SchemaSet,
    header: Header | None,
    envelope_hash: bytes | None,
    where: relay.Position,
    outcome: str,
    code: str | None,
    recipients: Sequence[str],
    flags: Sequence[str],
    now: datetime,
    agreement_id: str | None = None,
) -> bytes:
    """The metadata-only record of one decision."""
    record: dict[str, Any] = {
        "decided_at": now,
        "outcome": outcome,
        "code": code,
        "flags": list(flags),
        "topic": where.topic,
        "partition": where.partition,
        "offset": where.offset,
        "recipients": list(recipients),
        "envelope_hash": envelope_hash,
        **dict.fromkeys(HEADER_FIELDS),  # unknown when the bytes could not be verified
        "to": [],
    }
    if header is not None:
        record |= {
            "event_id": header.event_id,
            "event_type": header.event_type,
            "sender": header.sender,
            "case_ref": header.case_ref,
            "created_at": header.created_at,
            "sequence": header.sequence,
            "prev_hash": header.prev_hash,
            "correlation_id": header.correlation_id,
            "to": list(header.to),
            "agreement_id": agreement_id or header.agreement_id,
        }
    return avro.encode(schemas, AUDIT, record)


def quarantine_record(
    schemas: avro.SchemaSet, outcome: relay.Quarantine, where: relay.Position, original: bytes, now: datetime
) -> bytes:
    header = outcome.header
    return avro.encode(
        schemas,
        QUARANTINED,
        {
            "quarantined_at": now,
            "code": outcome.code,
            "why": outcome.why,
            "topic": where.topic,
            "partition": where.partition,
            "offset": where.offset,
            "event_id": header.event_id if header else None,
            "sender": header.sender if header else None,
            "original": original,
        },
    )
