"""Sealed envelopes: sign bytes, encrypt per data category, wrap keys per recipient with HPKE.

``seal`` writes the wire bytes, ``verify`` checks them without any private key (the router), and
``open`` is the exact reverse of ``seal`` for one recipient. Every failure is a ``CaseBridgeError``
with its stable code; library errors are wrapped at this boundary and no partial plaintext is ever
returned. The byte layout is specified in ``schemas/avro/README.md``.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from casebridge.core import avro
from casebridge.core.directory import check_current, check_valid, encryption_key, signing_key
from casebridge.core.errors import (
    BadSignature,
    CaseBridgeError,
    Malformed,
    Oversized,
    SchemaInvalid,
    Stale,
    UnknownKey,
    UnknownSchema,
)
from casebridge.core.keys import Identity, signature_valid, x25519_public
from casebridge.core.model import DATA_CATEGORIES, Directory, Header

SEALED = "casebridge.envelope.Sealed"
ENVELOPE = "casebridge.envelope.Envelope"
SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
ENC_LEN = 32  # X25519 encapsulated key
KEY_LEN = 32  # data key per category
NONCE_LEN = 12
TAG_LEN = 16
SECTION_LABEL = "casebridge/v1/section"
WRAP_LABEL = "casebridge/v1/wrap"
DEFAULT_MAX_SIZE = 1 << 20
DEFAULT_MAX_SKEW = timedelta(minutes=5)


class NotARecipient(CaseBridgeError, PermissionError):
    """``open`` by a participant the envelope is not addressed to."""

    code = "recipient_not_permitted"


@dataclass(frozen=True)
class SectionInfo:
    """What the router may know of a section: its category, who can read it, its size."""

    category: str
    recipients: tuple[str, ...]
    size: int


Checked = tuple[bytes, bytes, bytes, bool]  # public key, signature, message, whether it verifies


@dataclass(frozen=True)
class VerifiedEnvelope:
    """A signature-checked envelope: the clear header and section metadata, nothing decrypted."""

    header: Header
    sections: tuple[SectionInfo, ...]
    hash: bytes  # SHA-256 of the exact wire bytes (the next event's prev_hash)


@dataclass(frozen=True)
class OpenedEvent:
    """An envelope opened by one recipient: only the categories wrapped for it."""

    header: Header
    payload: Mapping[str, Any]  # category -> decoded record
    categories: tuple[str, ...]


def envelope_hash(data: bytes) -> bytes:
    """SHA-256 of the exact wire bytes; the sender's next header carries it as ``prev_hash``."""
    return hashlib.sha256(data).digest()


def frame(*parts: str) -> bytes:
    """Unambiguous concatenation: each part as 2-byte big-endian length + UTF-8 bytes."""
    out = bytearray()
    for part in parts:
        raw = part.encode()
        out += len(raw).to_bytes(2, "big") + raw
    return bytes(out)


SECTION_PREFIX = frame(SECTION_LABEL)
WRAP_PREFIX = frame(WRAP_LABEL)


def section_aad(event_id: str, category: str) -> bytes:
    """frame("casebridge/v1/section", event_id, category)."""
    return SECTION_PREFIX + frame(event_id, category)


def wrap_info(event_id: str, recipient: str, key_id: str, categories: tuple[str, ...]) -> bytes:
    """frame("casebridge/v1/wrap", event_id, recipient, key_id, *categories)."""
    return WRAP_PREFIX + frame(event_id, recipient, key_id, *categories)


# --- header <-> Avro record -------------------------------------------------------------------


def header_to_record(header: Header) -> dict[str, Any]:
    record = dict(header.__dict__)
    for name in ("to", "recipients", "consent_scopes"):
        record[name] = list(record[name])
    return record


def header_from_record(record: Mapping[str, Any]) -> Header:
    fields = dict(record)
    for name in ("to", "recipients", "consent_scopes"):
        fields[name] = tuple(fields[name])
    try:
        return Header(**fields)
    except TypeError as exc:
        raise SchemaInvalid(f"header fields do not match the model: {exc}") from exc


def unexpected(exc: Exception) -> Malformed:
    """The boundary: an error that is not a CaseBridgeError becomes ``malformed``."""
    return Malformed(f"unexpected {type(exc).__name__} while reading an envelope")


# --- seal -------------------------------------------------------------------------------------


def seal(
    header: Header,
    payload: Mapping[str, Any],
    sender: Identity,
    grants: Mapping[str, frozenset[str]],
    directory: Directory,
    now: datetime,
    *,
    schemas: avro.SchemaSet,
    max_size: int = DEFAULT_MAX_SIZE,
) -> bytes:
    """The signed, encrypted wire bytes of one event.

    ``grants`` maps each recipient to the categories it may see (the routing decision). The
    header's ``sender_key_id``, ``recipients`` and ``payload_schema`` are set here, and
    ``created_at`` is truncated to the millisecond (the wire precision).
    """
    check_current(directory, now)
    head = header_record(header, sender, grants, schemas)
    bodies = section_bodies(schemas, header.event_type, head["payload_schema"], payload, grants)
    keys = {category: secrets.token_bytes(KEY_LEN) for category in bodies}
    event_id = header.event_id
    record = {
        "header": head,
        "sections": [encrypt_section(event_id, c, keys[c], b) for c, b in bodies.items()],
        "wraps": [
            wrap_keys(event_id, rid, grants[rid], keys, directory, now)
            for rid in head["recipients"]
            if grants[rid] & keys.keys()
        ],
    }
    body = avro.encode(schemas, ENVELOPE, record)
    signed = {"signer": sender.participant, "key_id": sender.signing_key_id,
              "envelope": body, "signature": sender.signing_key.sign(body)}
    return within_limit(avro.encode(schemas, SEALED, signed), max_size)


def within_limit(data: bytes, max_size: int) -> bytes:
    if len(data) > max_size:
        raise Oversized(f"envelope of {len(data)} bytes exceeds the limit of {max_size}")
    return data


def header_record(
    header: Header, sender: Identity, grants: Mapping[str, frozenset[str]], schemas: avro.SchemaSet
) -> dict[str, Any]:
    """The Avro header record, with the fields ``seal`` derives filled in."""
    if header.sender != sender.participant:
        raise Malformed(f"header sender {header.sender} is not the sealing {sender.participant}")
    if header.created_at.tzinfo is None:
        raise Malformed("created_at must be timezone-aware")
    if header.event_type not in schemas.event_schemas:
        raise UnknownSchema(f"no payload schema for event type {header.event_type}")
    unknown = set().union(*grants.values()) - set(DATA_CATEGORIES) if grants else set()
    if unknown:
        raise SchemaInvalid(f"unknown data categories granted: {sorted(unknown)}")
    record = header_to_record(header)
    record["sender_key_id"] = sender.signing_key_id
    record["created_at"] = header.created_at.replace(
        microsecond=header.created_at.microsecond // 1000 * 1000
    )
    record["recipients"] = sorted(grants)
    record["payload_schema"] = schemas.fingerprints[schemas.event_schemas[header.event_type]]
    return record


def section_bodies(
    schemas: avro.SchemaSet,
    event_type: str,
    fingerprint: bytes,
    payload: Mapping[str, Any],
    grants: Mapping[str, frozenset[str]],
) -> dict[str, bytes]:
    """Avro body per present category that at least one recipient is granted, in schema order."""
    categories = schemas.sections[fingerprint]
    unknown = set(payload) - set(categories)
    if unknown:
        raise SchemaInvalid(f"{event_type} has no categories {sorted(unknown)}")
    granted = set().union(*grants.values()) if grants else set()
    return {
        category: avro.encode_body(schema, payload[category])
        for category, schema in categories.items()
        if payload.get(category) is not None and category in granted
    }


def encrypt_section(event_id: str, category: str, key: bytes, body: bytes) -> dict[str, Any]:
    nonce = secrets.token_bytes(NONCE_LEN)
    sealed = ChaCha20Poly1305(key).encrypt(nonce, body, section_aad(event_id, category))
    return {"category": category, "nonce": nonce, "ciphertext": sealed}


def wrap_keys(
    event_id: str,
    recipient: str,
    granted: frozenset[str],
    keys: Mapping[str, bytes],
    directory: Directory,
    now: datetime,
) -> dict[str, Any]:
    """One HPKE seal per recipient, of the data keys of the categories it may see."""
    key = encryption_key(directory, recipient, now)
    categories = tuple(c for c in keys if c in granted)
    info = wrap_info(event_id, recipient, key.key_id, categories)
    plain = b"".join(keys[c] for c in categories)
    sealed = SUITE.encrypt(plain, x25519_public(key.public_key), info)
    return {"recipient": recipient, "recipient_key_id": key.key_id, "categories": list(categories),
            "enc": sealed[:ENC_LEN], "wrapped_keys": sealed[ENC_LEN:]}


# --- verify -----------------------------------------------------------------------------------


def verify(
    data: bytes,
    directory: Directory,
    now: datetime,
    max_age: timedelta,
    *,
    schemas: avro.SchemaSet,
    max_size: int = DEFAULT_MAX_SIZE,
    max_skew: timedelta = DEFAULT_MAX_SKEW,
    checked: Checked | None = None,
) -> VerifiedEnvelope:
    """Check signature, signer, key validity, age and section structure; decrypt nothing.
    ``checked``: the signature's check made ahead (elsewhere), used only if its key, signature
    and message are exactly those of ``data`` under ``directory``; else the check is made here."""
    try:
        header, record = verified_record(data, directory, now, max_age, schemas, max_size, max_skew, checked)
        return VerifiedEnvelope(header, section_infos(record), envelope_hash(data))
    except CaseBridgeError:
        raise
    except Exception as exc:
        raise unexpected(exc) from exc


def verified_record(
    data: bytes,
    directory: Directory,
    now: datetime,
    max_age: timedelta,
    schemas: avro.SchemaSet,
    max_size: int,
    max_skew: timedelta,
    checked: Checked | None = None,
) -> tuple[Header, Mapping[str, Any]]:
    """Verify before decoding: only the outer record is read before the signature is checked."""
    within_limit(data, max_size)
    check_current(directory, now)
    outer = avro.decode(schemas, data, SEALED)
    key = signing_key(directory, outer["signer"], outer["key_id"])
    signed = (key.public_key, outer["signature"], outer["envelope"])
    valid = checked[3] if checked is not None and checked[:3] == signed else signature_valid(*signed)
    if not valid:
        raise BadSignature("envelope signature does not verify")
    record = avro.decode(schemas, outer["envelope"], ENVELOPE)
    header = header_from_record(record["header"])
    if (header.sender, header.sender_key_id) != (outer["signer"], outer["key_id"]):
        raise BadSignature("the header's sender is not the signer")
    check_valid(key, header.created_at)
    check_age(header.created_at, now, max_age, max_skew)
    check_structure(schemas, header, record)
    return header, record


def signed_parts(data: bytes, directory: Directory, schemas: avro.SchemaSet,
                 max_size: int = DEFAULT_MAX_SIZE) -> tuple[bytes, bytes, bytes] | None:
    """(signer's public key, signature, signed message) of an envelope, for its signature to be
    checked ahead (``verify``'s ``checked``); None when ``verify`` will refuse it before that."""
    try:
        within_limit(data, max_size)
        outer = avro.decode(schemas, data, SEALED)
        key = signing_key(directory, outer["signer"], outer["key_id"])
    except Exception:  # verify raises it again, with its code
        return None
    return key.public_key, outer["signature"], outer["envelope"]


def check_age(created: datetime, now: datetime, max_age: timedelta, max_skew: timedelta) -> None:
    if created < now - max_age:
        raise Stale(f"created {created.isoformat()}, older than {max_age} at {now.isoformat()}")
    if created > now + max_skew:
        raise Stale(f"created {created.isoformat()}, in the future at {now.isoformat()}")


def check_structure(schemas: avro.SchemaSet, header: Header, record: Mapping[str, Any]) -> None:
    """Sections are categories of the event's payload schema; wraps name recipients and sections."""
    categories = payload_categories(schemas, header)
    seen: set[str] = set()
    for section in record["sections"]:
        if section["category"] in seen or section["category"] not in categories:
            raise SchemaInvalid("duplicate sections or categories outside the payload schema")
        if len(section["nonce"]) != NONCE_LEN or len(section["ciphertext"]) < TAG_LEN:
            raise Malformed("section nonce or ciphertext of the wrong size")
        seen.add(section["category"])
    wrapped: set[str] = set()
    for wrap in record["wraps"]:
        check_wrap(wrap, header, seen)
        if wrap["recipient"] in wrapped:
            raise Malformed("two key wraps for one recipient")
        wrapped.add(wrap["recipient"])


def section_infos(record: Mapping[str, Any]) -> tuple[SectionInfo, ...]:
    """Category, readers and size of each section of a structurally checked envelope."""
    return tuple(
        SectionInfo(
            s["category"],
            tuple(w["recipient"] for w in record["wraps"] if s["category"] in w["categories"]),
            len(s["ciphertext"]),
        )
        for s in record["sections"]
    )


def payload_categories(schemas: avro.SchemaSet, header: Header) -> Mapping[str, Any]:
    if header.payload_schema not in schemas.sections:
        raise UnknownSchema(f"unknown payload schema {header.payload_schema.hex()}")
    expected = schemas.event_schemas.get(header.event_type)
    if schemas.names[header.payload_schema] != expected:
        raise SchemaInvalid(f"payload schema does not belong to {header.event_type}")
    return schemas.sections[header.payload_schema]


def check_wrap(wrap: Mapping[str, Any], header: Header, sections: set[str]) -> None:
    categories = wrap["categories"]
    if wrap["recipient"] not in header.recipients:
        raise Malformed(f"key wrap for {wrap['recipient']}, who is not a recipient")
    if len(set(categories)) != len(categories) or not sections.issuperset(categories):
        raise Malformed(f"key wrap for {wrap['recipient']} names unknown or repeated sections")
    expected = KEY_LEN * len(categories) + TAG_LEN
    if len(wrap["enc"]) != ENC_LEN or len(wrap["wrapped_keys"]) != expected:
        raise Malformed(f"key wrap for {wrap['recipient']} of the wrong size")


# --- open -------------------------------------------------------------------------------------


def open(  # shadows the builtin on purpose: the exact reverse of ``seal`` (``sealing.open``)
    data: bytes,
    me: Identity,
    directory: Directory,
    now: datetime,
    max_age: timedelta,
    *,
    schemas: avro.SchemaSet,
    max_size: int = DEFAULT_MAX_SIZE,
    max_skew: timedelta = DEFAULT_MAX_SKEW,
) -> OpenedEvent:
    """Verify, then decrypt the categories wrapped for ``me``; all of them or an error."""
    try:
        header, record = verified_record(data, directory, now, max_age, schemas, max_size, max_skew)
        return opened(header, record, me, schemas)
    except CaseBridgeError:
        raise
    except Exception as exc:
        raise unexpected(exc) from exc


def opened(
    header: Header, record: Mapping[str, Any], me: Identity, schemas: avro.SchemaSet
) -> OpenedEvent:
    if me.participant not in header.recipients:
        raise NotARecipient(f"{me.participant} is not a recipient of {header.event_id}")
    wrap = next((w for w in record["wraps"] if w["recipient"] == me.participant), None)
    if wrap is None:
        return OpenedEvent(header, {}, ())
    keys = unwrap(header.event_id, wrap, me)
    sections = {s["category"]: s for s in record["sections"]}
    categories = schemas.sections[header.payload_schema]
    payload = {
        c: avro.decode_body(categories[c], decrypt_section(header.event_id, sections[c], keys[c]))
        for c in wrap["categories"]
    }
    return OpenedEvent(header, payload, tuple(wrap["categories"]))


def unwrap(event_id: str, wrap: Mapping[str, Any], me: Identity) -> dict[str, bytes]:
    """The data keys sealed for ``me``, by category."""
    if wrap["recipient_key_id"] != me.encryption_key_id:
        raise UnknownKey(f"keys wrapped for {wrap['recipient_key_id']}, not {me.encryption_key_id}")
    categories = tuple(wrap["categories"])
    info = wrap_info(event_id, me.participant, me.encryption_key_id, categories)
    try:
        raw = SUITE.decrypt(wrap["enc"] + wrap["wrapped_keys"], me.encryption_key, info)
    except Exception as exc:  # cryptography raises InvalidTag or ValueError here
        raise Malformed("key wrap does not open (moved or corrupted)") from exc
    return {c: raw[i * KEY_LEN : (i + 1) * KEY_LEN] for i, c in enumerate(categories)}


def decrypt_section(event_id: str, section: Mapping[str, Any], key: bytes) -> bytes:
    aad = section_aad(event_id, section["category"])
    try:
        return ChaCha20Poly1305(key).decrypt(section["nonce"], section["ciphertext"], aad)
    except InvalidTag as exc:
        raise Malformed(f"section {section['category']} does not decrypt (moved?)") from exc
