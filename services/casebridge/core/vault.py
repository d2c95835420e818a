"""Encryption at rest, shreddable per case: the pure half (keys in, bytes out).

A node keeps what it decrypted under one AES-256-GCM data key per (case, data category); each
data key is stored wrapped (AES-256-GCM) under the node's master key, apart from the records.
Destroying a case's wrapped keys makes its stored content unrecoverable (crypto-shredding);
destroying one category's keys when its retention class expires removes just that category.
Associated data binds every ciphertext to its case, category and event, and every wrapped key to
its case and category, so neither can be moved to another row.

Retention classes (``retention.yaml`` beside the agreements): per agreement, per data category,
the days after ``case.closed`` the category is kept (``expired`` says which are due).
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from casebridge.core.errors import CaseBridgeError
from casebridge.core.model import DATA_CATEGORIES

KEY_LEN = 32
NONCE_LEN = 12
SHRED_REASONS: tuple[str, ...] = (
    "retention_expired",
    "data_subject_request",
    "consent_withdrawn",
    "court_order",
    "entered_in_error",
)
"""Why a case was shredded: a code, never free text (the reason goes to the audit trail)."""


class VaultError(CaseBridgeError, ValueError):
    """A master key that does not fit, or a stored ciphertext that does not open."""

    code = "malformed"


class Shredded(CaseBridgeError, LookupError):
    """The content asked for was destroyed (crypto-shredded or expired)."""

    code = "shredded"


def parse_master_key(text: str) -> bytes:
    """A 32-byte master key from its base64 or hex text (``VaultError`` otherwise)."""
    text = text.strip()
    try:
        key = bytes.fromhex(text) if len(text) == 2 * KEY_LEN else base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise VaultError("the node master key is neither base64 nor hex") from exc
    if len(key) != KEY_LEN:
        raise VaultError(f"the node master key must be {KEY_LEN} bytes, not {len(key)}")
    return key


def new_key() -> bytes:
    return secrets.token_bytes(KEY_LEN)


def _seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = secrets.token_bytes(NONCE_LEN)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _open(key: bytes, blob: bytes, aad: bytes, what: str) -> bytes:
    try:
        return AESGCM(key).decrypt(blob[:NONCE_LEN], blob[NONCE_LEN:], aad)
    except (InvalidTag, ValueError) as exc:
        raise VaultError(f"{what} does not open with this key") from exc


def _key_aad(case_ref: str, category: str) -> bytes:
    return f"casebridge.vault.key|{case_ref}|{category}".encode()


def _data_aad(case_ref: str, category: str, event_id: str) -> bytes:
    return f"casebridge.vault.data|{case_ref}|{category}|{event_id}".encode()


def wrap_key(master: bytes, case_ref: str, category: str, data_key: bytes) -> bytes:
    return _seal(master, data_key, _key_aad(case_ref, category))


def unwrap_key(master: bytes, case_ref: str, category: str, wrapped: bytes) -> bytes:
    return _open(master, wrapped, _key_aad(case_ref, category), "a wrapped data key")


def encrypt(data_key: bytes, case_ref: str, category: str, event_id: str, plaintext: bytes) -> bytes:
    return _seal(data_key, plaintext, _data_aad(case_ref, category, event_id))


def decrypt(data_key: bytes, case_ref: str, category: str, event_id: str, blob: bytes) -> bytes:
    return _open(data_key, blob, _data_aad(case_ref, category, event_id), f"stored {category}")


@dataclass(frozen=True)
class RetentionClass:
    """Keep ``category`` of cases under ``agreement`` for ``days`` after ``case.closed``."""

    agreement: str  # an agreement id, or "*" for any
    category: str
    days: int


def parse_retention(doc: Mapping[str, Any]) -> tuple[RetentionClass, ...]:
    """``{"retention": {<agreement id or "*">: {<category>: <days>}}}`` as retention classes."""
    found = []
    for agreement, categories in (doc.get("retention") or {}).items():
        for category, days in (categories or {}).items():
            if category not in DATA_CATEGORIES or not isinstance(days, int) or days < 0:
                raise VaultError(f"retention.{agreement}.{category}: a data category and whole days")
            found.append(RetentionClass(str(agreement), category, days))
    return tuple(found)


def expired(
    classes: tuple[RetentionClass, ...], agreement: str | None, closed_at: datetime | None, now: datetime
) -> frozenset[str]:
    """The categories of a case (closed at ``closed_at`` under ``agreement``) due for shredding."""
    if closed_at is None:
        return frozenset()
    specific = {c.category: c.days for c in classes if c.agreement == agreement}
    general = {c.category: c.days for c in classes if c.agreement == "*"}
    days = {**general, **specific}
    return frozenset(cat for cat, n in days.items() if closed_at + timedelta(days=n) <= now)
