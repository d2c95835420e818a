"""The shared vocabulary of CaseBridge: participants, event types, data categories, the header.

Everything here is a frozen value; behaviour lives in functions in the sibling modules
(``sealing``, ``directory``, ``agreements``, ``routing``, ``deadlines``). Times are timezone-aware
``datetime`` values in UTC, always passed in by the caller (the core never reads the clock).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

COUNTRIES: tuple[str, ...] = ("KH", "LA", "MM", "TH", "VN", "CN")
"""The six countries of the Greater Mekong Sub-region (ISO 3166 alpha-2)."""

REGION = "REG"
"""Pseudo-country of regional bodies (``REG.SECRETARIAT``)."""

ROLES: tuple[str, ...] = ("government", "police", "ngo", "secretariat")

HANDLING_CODES: tuple[str, ...] = ("H0", "H1", "H2", "H3")
"""After Europol SIENA: H0 free within purpose, H1 not as evidence without permission,
H2 no onward sharing without the provider's permission, H3 see conditions."""

DATA_CATEGORIES: tuple[str, ...] = (
    "operational",  # dates, checkpoints, statuses, outcomes: no personal particulars
    "identity",  # names, birth date, sex, nationality, documents, photos
    "family_contact",  # family members, addresses, phone numbers, tracing results
    "case_interview",  # identification interview, narrative, case notes
    "health",  # health screening, medical and psychosocial needs
    "legal",  # legal status, proceedings, witness role
    "logistics",  # travel documents, escorts, transport for return
    "reintegration",  # reintegration plan, stages, follow-up notes
)
"""Each payload schema groups its fields under these; each category is sealed separately."""

CONSENT_SCOPES: tuple[str, ...] = ("origin_notification", "ngo_sharing", "family_tracing")
"""What a victim may consent to, or object to (ACTIP art. 14(3) gates origin notification)."""

EVENT_TYPES: tuple[str, ...] = (
    "identification.decided",
    "consent.recorded",
    "consent.withdrawn",
    "origin.notified",
    "nationality_verification.requested",
    "nationality_verification.responded",
    "travel_document.requested",
    "travel_document.issued",
    "family_tracing.requested",
    "family_assessment.completed",
    "legal_proceedings.status_changed",
    "return_plan.proposed",
    "repatriation.approved",
    "handover.scheduled",
    "handover.completed",
    "reception.completed",
    "reintegration.stage_changed",
    "followup.recorded",
    "referral.sent",
    "referral.accepted",
    "referral.rejected",
    "referral.done",
    "referral.revoked",
    "case.closed",
    "case.shredded",
    "handling.permission_granted",
    "consent.withdrawal_notified",
    "deadline.approaching",
    "sla.breached",
    "receipt.delivered",
    "receipt.processed",
    "receipt.rejected",
)
"""The event catalogue of DOMAIN.md; each has a payload schema under ``schemas/avro/``."""

PARTICIPANT_ID = re.compile(r"^(?:KH|LA|MM|TH|VN|CN|REG)\.[A-Z][A-Z0-9_]{1,31}$")


def country_of(participant_id: str) -> str:
    """``"TH.MSDHS"`` -> ``"TH"``."""
    return participant_id.split(".", 1)[0]


@dataclass(frozen=True)
class KeyRecord:
    """One public key of a participant, as the signed directory lists it."""

    key_id: str
    use: Literal["sign", "encrypt"]  # Ed25519 signing key or X25519 encryption key
    public_key: bytes  # raw 32 bytes
    valid_from: datetime
    valid_until: datetime | None = None
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class Participant:
    """An agency, NGO or regional body behind a node."""

    id: str  # "<COUNTRY>.<ORG>", e.g. "KH.MOSVY"
    country: str  # ISO alpha-2, or "REG"
    role: str  # one of ROLES
    name: str
    keys: tuple[KeyRecord, ...] = ()


@dataclass(frozen=True)
class Directory:
    """The secretariat-signed list of participants and their keys (fail closed once expired)."""

    version: int
    issued_at: datetime
    expires_at: datetime
    participants: Mapping[str, Participant] = field(default_factory=dict)


@dataclass(frozen=True)
class Header:
    """The clear, signed routing metadata of one event. Never holds personal data."""

    event_id: str  # UUID
    event_type: str  # one of EVENT_TYPES
    sender: str  # participant id
    sender_key_id: str
    created_at: datetime
    case_ref: str  # pseudonymous case reference, the Kafka key; never a name
    to: tuple[str, ...]  # addressed countries ("KH") or participants ("KH.CWCC")
    handling_code: str = "H2"
    correlation_id: str | None = None  # the event this one answers
    agreement_id: str | None = None  # the agreement the sender applied
    agreement_version: int | None = None
    recipients: tuple[str, ...] = ()  # participants the sealed sections are wrapped for
    sequence: int = 0  # per-sender sequence number, from 1
    prev_hash: bytes = b""  # SHA-256 of the sender's previous envelope (b"" for the first)
    payload_schema: bytes = b""  # 8-byte CRC-64-AVRO fingerprint of the payload schema
    consent_scopes: tuple[str, ...] = ()  # consent.* events: the scopes recorded or withdrawn
    witness_hold: bool | None = None  # legal_proceedings.*: True sets, False lifts the hold
    handling_conditions: str | None = None  # H3: the provider's conditions (never personal data)
    forward_of: str | None = None  # a forward: the event id of the received record it passes on
    permitted_by: str | None = None  # a forward of H2: the provider who permitted it ...
    permit_key_id: str | None = None  # ... the signing key of its permission ...
    permit_signature: bytes = b""  # ... and its Ed25519 signature (core.handling.permission_message)


@dataclass(frozen=True)
class CaseState:
    """Per-case routing state that the router keeps in a table (metadata only)."""

    consent: frozenset[str] = frozenset()  # scopes the victim has consented to
    witness_hold: bool = False


def apply_case_flags(state: CaseState, header: Header) -> CaseState:
    """The case state after ``header``: consent and witness-hold flags ride in the clear header."""
    if header.event_type == "consent.recorded":
        state = CaseState(state.consent | set(header.consent_scopes), state.witness_hold)
    elif header.event_type == "consent.withdrawn":
        state = CaseState(state.consent - set(header.consent_scopes), state.witness_hold)
    if header.witness_hold is not None:
        state = CaseState(state.consent, header.witness_hold)
    return state
