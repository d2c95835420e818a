"""Factory helpers for agreement, routing and deadline tests (plain functions, no fixtures).

Keys are generated at run time; no private key is ever committed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from casebridge.core.agreements import Agreement, parse_agreement, sign_agreement, signatures_json
from casebridge.core.model import CaseState, Directory, Header, KeyRecord, Participant
from casebridge.core.routing import Policy, index_agreements

ROOT = Path(__file__).resolve().parents[2]
AGREEMENTS_DIR = ROOT / "deploy" / "agreements"
NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
KEY_FROM = datetime(2020, 1, 1, tzinfo=UTC)

PARTICIPANTS: dict[str, str] = {
    "REG.SECRETARIAT": "secretariat",
    "TH.MSDHS": "government", "KH.MOSVY": "government", "LA.MOLSW": "government",
    "MM.DSW": "government", "VN.MOLISA": "government", "CN.MCA": "government",
    "TH.RTP": "police", "KH.MOI": "police", "LA.MPS": "police", "MM.MPF": "police",
    "VN.MPS": "police", "CN.MPS": "police",
    "KH.CWCC": "ngo", "KH.CCPCR": "ngo", "LA.LWU": "ngo", "VN.VWU": "ngo",
}
ALL_CONSENT = CaseState(frozenset({"origin_notification", "ngo_sharing", "family_tracing"}))


@cache
def private_key(participant: str) -> Ed25519PrivateKey:
    """One signing key per participant for the whole test session, made at run time."""
    return Ed25519PrivateKey.generate()


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def signing_key(participant: str, **overrides: object) -> KeyRecord:
    record = KeyRecord(f"{participant}#sign-1", "sign", public_bytes(private_key(participant)),
                       KEY_FROM)
    return replace(record, **overrides)  # type: ignore[arg-type]


def directory(keys: Mapping[str, KeyRecord] | None = None,
              drop: Iterable[str] = ()) -> Directory:
    """The region's participants with run-time keys; ``keys`` overrides some, ``drop`` removes."""
    keys = keys or {}
    participants = {
        pid: Participant(pid, pid.split(".")[0], role, pid,
                         (keys.get(pid) or signing_key(pid),))
        for pid, role in PARTICIPANTS.items() if pid not in set(drop)}
    return Directory(1, KEY_FROM, datetime(2030, 1, 1, tzinfo=UTC), participants)


def document_texts() -> dict[str, str]:
    """Every committed agreement document: source path -> exact text."""
    return {str(p.relative_to(ROOT)): p.read_bytes().decode("utf-8")
            for p in sorted(AGREEMENTS_DIR.glob("*.yaml")) if p.name != "calendars.yaml"}


@cache
def committed() -> tuple[Agreement, ...]:
    return tuple(parse_agreement(text, src) for src, text in document_texts().items())


@cache
def policy() -> Policy:
    return index_agreements(committed())


def agreement(ident: str) -> Agreement:
    return next(a for a in committed() if a.id == ident)


def sign_all(text: str, signatories: Iterable[str], signed_at: datetime = NOW) -> str:
    """A ``<id>.sig.json`` with a signature by each of ``signatories``."""
    parsed = parse_agreement(text, "signing")
    sigs = [sign_agreement(text, s, f"{s}#sign-1", private_key(s), signed_at)
            for s in signatories]
    return signatures_json(parsed, sigs)


def header(event_type: str, sender: str, to: Iterable[str], **overrides: object) -> Header:
    base = Header(event_id="00000000-0000-4000-8000-000000000001", event_type=event_type,
                  sender=sender, sender_key_id=f"{sender}#sign-1", created_at=NOW,
                  case_ref="case-7f3a", to=tuple(to))
    return replace(base, **overrides)  # type: ignore[arg-type]
