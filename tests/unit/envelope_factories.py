"""Factory helpers for the envelope tests: schemas, identities, directories, headers, payloads.

Keys are generated at import time (never committed). Everything is plain values and functions.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from casebridge.core import avro
from casebridge.core.directory import build_directory
from casebridge.core.keys import Identity, encryption_public, generate_identity, signing_public
from casebridge.core.model import Directory, Header, KeyRecord, Participant, country_of
from casebridge.core.sealing import ENVELOPE, SEALED

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "schemas" / "avro"
LOCK = SCHEMA_DIR / "released.lock"
SCHEMAS = avro.load_schemas(SCHEMA_DIR, LOCK)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
EPOCH = NOW - timedelta(days=365)
MAX_AGE = timedelta(days=7)
ROLES = {"SECRETARIAT": "secretariat", "MSDHS": "government", "MOSVY": "government", "RTP": "police",
         "CWCC": "ngo", "MOLSW": "government"}
PEOPLE = ("REG.SECRETARIAT", "TH.MSDHS", "KH.MOSVY", "KH.CWCC", "TH.RTP", "LA.MOLSW")
IDS: dict[str, Identity] = {pid: generate_identity(pid) for pid in PEOPLE}


def key_records(
    identity: Identity, since: datetime = EPOCH, until: datetime | None = None,
    revoked_at: datetime | None = None,
) -> tuple[KeyRecord, KeyRecord]:
    """The directory records of an identity's two public keys."""
    return (
        KeyRecord(identity.signing_key_id, "sign", signing_public(identity), since, until,
                  revoked_at),
        KeyRecord(identity.encryption_key_id, "encrypt", encryption_public(identity), since,
                  until, revoked_at),
    )


def participant(pid: str, keys: Iterable[KeyRecord]) -> Participant:
    return Participant(pid, country_of(pid), ROLES[pid.split(".")[1]], pid, tuple(keys))


def make_directory(
    ids: Mapping[str, Identity] = IDS,
    extra_keys: Mapping[str, tuple[KeyRecord, ...]] | None = None,
    issued_at: datetime = NOW - timedelta(days=1),
    validity: timedelta = timedelta(days=30),
) -> Directory:
    """A directory of ``ids`` with their keys (plus ``extra_keys`` per participant)."""
    extra = extra_keys or {}
    people = [participant(pid, (*key_records(i), *extra.get(pid, ()))) for pid, i in ids.items()]
    return build_directory(people, 1, issued_at, validity)


DIRECTORY = make_directory()


def header(event_type: str = "handover.scheduled", sender: str = "TH.MSDHS", **over: Any) -> Header:
    base = Header(
        event_id=str(uuid.uuid4()), event_type=event_type, sender=sender, sender_key_id="",
        created_at=NOW - timedelta(minutes=1), case_ref="CASE-7f3a", to=("KH",), sequence=1,
    )
    return replace(base, **over)


GRANTS = {
    "KH.MOSVY": frozenset({"operational", "identity", "logistics"}),
    "KH.CWCC": frozenset({"operational"}),
    "TH.RTP": frozenset({"operational", "logistics"}),
}


def sub_schema(event_type: str, category: str) -> Mapping[str, Any]:
    document = SCHEMAS.documents[SCHEMAS.event_schemas[event_type]]
    field = next(f for f in document["fields"] if f["name"] == category)
    return field["type"][1]  # type: ignore[no-any-return]


def categories_of(event_type: str) -> tuple[str, ...]:
    document = SCHEMAS.documents[SCHEMAS.event_schemas[event_type]]
    return tuple(f["name"] for f in document["fields"])


def millis(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


PRIMITIVES: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "string": st.text(max_size=12),
    "int": st.integers(-(2**31), 2**31 - 1),
    "long": st.integers(-(2**63), 2**63 - 1),
    "boolean": st.booleans(),
    "bytes": st.binary(max_size=16),
}
TIMES = st.datetimes(datetime(1971, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC)).map(millis)
DATES = st.dates(date(1900, 1, 1), date(2100, 1, 1))


def from_schema(kind: Any) -> st.SearchStrategy[Any]:
    """Values of an Avro schema document (the subset the payload schemas use)."""
    if isinstance(kind, list):
        return st.one_of(*[from_schema(k) for k in kind])
    if isinstance(kind, str):
        return PRIMITIVES[kind]
    logical = {"date": DATES, "timestamp-millis": TIMES}.get(kind.get("logicalType", ""))
    if logical is not None:
        return logical
    if kind["type"] == "record":
        return st.fixed_dictionaries({f["name"]: from_schema(f["type"]) for f in kind["fields"]})
    if kind["type"] == "array":
        return st.lists(from_schema(kind["items"]), max_size=2)
    return from_schema(kind["type"])


def payloads(event_type: str) -> st.SearchStrategy[dict[str, Any]]:
    """Payloads of an event type: each category present or absent."""
    return st.fixed_dictionaries({}, optional={
        c: from_schema(sub_schema(event_type, c)) for c in categories_of(event_type)
    })


def example_payload(event_type: str) -> dict[str, Any]:
    """One fixed, full payload (every category present) of an event type."""
    return {c: example_of(sub_schema(event_type, c)) for c in categories_of(event_type)}


def example_of(kind: Any) -> Any:
    if isinstance(kind, list):
        return example_of(kind[-1])
    fixed = {"string": "x", "int": 1, "long": 2, "boolean": True, "bytes": b"\x01", "null": None}
    if isinstance(kind, str):
        return fixed[kind]
    if kind.get("logicalType") == "date":
        return date(2010, 5, 17)
    if kind.get("logicalType") == "timestamp-millis":
        return NOW - timedelta(hours=3)
    if kind["type"] == "record":
        return {f["name"]: example_of(f["type"]) for f in kind["fields"]}
    if kind["type"] == "array":
        return [example_of(kind["items"])]
    return example_of(kind["type"])


def resign(data: bytes, signer: Identity, change: Any) -> bytes:
    """Decode a wire envelope, let ``change`` edit the inner record, re-encode and sign again."""
    outer = avro.decode(SCHEMAS, data, SEALED)
    record = avro.decode(SCHEMAS, outer["envelope"], ENVELOPE)
    change(record)
    body = avro.encode(SCHEMAS, ENVELOPE, record)
    return avro.encode(SCHEMAS, SEALED, {"signer": signer.participant,
                                          "key_id": signer.signing_key_id, "envelope": body,
                                          "signature": signer.signing_key.sign(body)})
