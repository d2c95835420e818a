"""The records CaseBridge issues itself: audit and quarantine records, the router's signed
``receipt.rejected``, the deadline tracker's alerts, and the CloudEvents ``ce_*`` headers that
every record on a ``cb.in.*`` topic carries. Built here only, not where they are sent.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from casebridge.core import avro, sealing
from casebridge.core.keys import Identity
from casebridge.core.model import Directory, Header

AUDIT = "casebridge.audit.AuditRecord"
QUARANTINED = "casebridge.audit.QuarantineRecord"
ROUTER = "REG.ROUTER"
TRACKER = "REG.DEADLINES"
KEPT_ORIGINAL = 65_536  # bytes of an oversized record kept in quarantine (with its hash and size)
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


def cloudevent_headers(header: Header) -> list[tuple[str, bytes]]:
    """CloudEvents Kafka-binding headers (binary mode) for tooling: ids and types, no personal data."""
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
    where: tuple[str, int, int],
    outcome: str,
    code: str | None,
    recipients: Sequence[str],
    flags: Sequence[str],
    now: datetime,
    agreement_id: str | None = None,
) -> bytes:
    """The metadata-only record of one decision; ``where`` is (topic, partition, offset)."""
    record: dict[str, Any] = {
        "decided_at": now,
        "outcome": outcome,
        "code": code,
        "flags": list(flags),
        "topic": where[0],
        "partition": where[1],
        "offset": where[2],
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
    schemas: avro.SchemaSet,
    code: str,
    why: str,
    header: Header | None,
    where: tuple[str, int, int],
    original: bytes,
    now: datetime,
    keep: int | None = None,
) -> bytes:
    """The refused record kept on ``cb.quarantine``: whole, or (``keep``) its first bytes, with
    its size and SHA-256 either way, so an oversized record still fits a Kafka record."""
    kept = original if keep is None else original[:keep]
    return avro.encode(
        schemas,
        QUARANTINED,
        {
            "quarantined_at": now,
            "code": code,
            "why": why,
            "topic": where[0],
            "partition": where[1],
            "offset": where[2],
            "event_id": header.event_id if header else None,
            "sender": header.sender if header else None,
            "original": kept,
            "original_size": len(original),
            "original_sha256": hashlib.sha256(original).digest(),
        },
    )


def rejection(
    schemas: avro.SchemaSet,
    directory: Directory,
    router: Identity,
    refused: Header,
    to: str,
    refused_hash: bytes,
    code: str,
    why: str,
    now: datetime,
) -> tuple[Header, bytes]:
    """The router's signed ``receipt.rejected`` of ``refused`` to ``to`` (the outbox's owner),
    naming the hash of the exact bytes refused so the sender can tell its own from a copy."""
    header = Header(
        event_id=str(uuid.uuid4()),
        event_type="receipt.rejected",
        sender=router.participant,
        sender_key_id="",
        created_at=now,
        case_ref=refused.case_ref,
        to=(to,),
        handling_code="H0",
        correlation_id=refused.event_id,
    )
    payload = {
        "operational": {
            "for_event_id": refused.event_id,
            "envelope_hash": refused_hash,
            "at": now,
            "code": code,
            "why": why[:500],
            "note": None,
        }
    }
    grants = {to: frozenset({"operational"})}
    return header, sealing.seal(header, payload, router, grants, directory, now, schemas=schemas)


def alert(
    schemas: avro.SchemaSet,
    directory: Directory,
    tracker: Identity,
    kind: str,
    operational: Mapping[str, Any],
    case_ref: str,
    opened_by: str,
    agreement: tuple[str, int],
    recipients: tuple[str, ...],
    now: datetime,
) -> tuple[Header, bytes]:
    """The deadline tracker's signed ``deadline.approaching`` / ``sla.breached``."""
    header = Header(
        event_id=str(uuid.uuid4()),
        event_type=kind,
        sender=tracker.participant,
        sender_key_id="",
        created_at=now,
        case_ref=case_ref,
        to=recipients,
        handling_code="H0",
        correlation_id=opened_by,
        agreement_id=agreement[0],
        agreement_version=agreement[1],
    )
    grants = {r: frozenset({"operational"}) for r in recipients}
    data = sealing.seal(header, {"operational": dict(operational)}, tracker, grants, directory, now,
                        schemas=schemas)
    return header, data
