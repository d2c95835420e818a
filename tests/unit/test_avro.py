"""Single-object encoding and the fingerprint -> schema table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from casebridge.core import avro
from casebridge.core.errors import CaseBridgeError, Malformed, SchemaInvalid, UnknownSchema
from casebridge.core.model import DATA_CATEGORIES, EVENT_TYPES
from tests.unit.envelope_factories import SCHEMA_DIR, SCHEMAS

SEALED = "casebridge.envelope.Sealed"
RECORD = {"signer": "TH.MSDHS", "key_id": "0123456789abcdef", "envelope": b"abc",
          "signature": b"s" * 64}


def test_fingerprint_matches_the_avro_specification_test_vector() -> None:
    """CRC-64-AVRO of "int" is 0x7275d51a3f395c8f, written little-endian on the wire."""
    assert avro.fingerprint_of("int") == (0x7275D51A3F395C8F).to_bytes(8, "little")


def test_single_object_layout_is_marker_fingerprint_body() -> None:
    """Encoded bytes are C3 01, the 8-byte fingerprint, then the Avro body."""
    data = avro.encode(SCHEMAS, SEALED, RECORD)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == SCHEMAS.fingerprints[SEALED]
    assert data[10:] == avro.encode_body(SCHEMAS.by_name[SEALED], RECORD)
    assert avro.decode(SCHEMAS, data, SEALED) == RECORD


def test_every_event_type_has_a_payload_schema_of_data_categories() -> None:
    """Each catalogue event has a payload schema whose top-level fields are data categories."""
    assert set(SCHEMAS.event_schemas) == set(EVENT_TYPES)
    for name in SCHEMAS.event_schemas.values():
        categories = SCHEMAS.sections[SCHEMAS.fingerprints[name]]
        assert "operational" in categories
        assert set(categories) <= set(DATA_CATEGORIES)


def test_handover_completed_carries_both_officials_signatures() -> None:
    """handover.completed's operational category holds the statement and two attestations."""
    fp = SCHEMAS.fingerprints["casebridge.events.HandoverCompleted"]
    fields = [f["name"] for f in SCHEMAS.sections[fp]["operational"]["fields"]]
    assert fields[:3] == ["statement", "handing", "receiving"]


def test_schema_files_are_named_after_their_full_name() -> None:
    """Every file is <namespace>.<Name>.avsc."""
    for path in SCHEMA_DIR.glob("*.avsc"):
        doc = json.loads(path.read_text())
        assert path.name == f"{doc['namespace']}.{doc['name']}.avsc"


def test_unknown_fingerprint_is_unknown_schema() -> None:
    """A fingerprint outside the table raises UnknownSchema."""
    with pytest.raises(UnknownSchema):
        avro.decode(SCHEMAS, b"\xc3\x01" + b"\0" * 8 + b"\0", SEALED)


def test_wrong_marker_or_trailing_bytes_are_malformed() -> None:
    """A bad marker, a short prefix or bytes after the record raise Malformed."""
    good = avro.encode(SCHEMAS, SEALED, RECORD)
    for bad in (b"\xc3\x02" + good[2:], good[:5], good + b"\0"):
        with pytest.raises(Malformed):
            avro.decode(SCHEMAS, bad, SEALED)


def test_strict_writer_rejects_unknown_and_missing_fields() -> None:
    """encode refuses a record with an extra field or a missing one (SchemaInvalid)."""
    for bad in ({**RECORD, "extra": 1}, {k: v for k, v in RECORD.items() if k != "signer"}):
        with pytest.raises(SchemaInvalid):
            avro.encode(SCHEMAS, SEALED, bad)


def test_released_schemas_stay_in_the_fingerprint_table(tmp_path: Path) -> None:
    """A schema released earlier is still decodable by fingerprint after it changed."""
    for path in SCHEMA_DIR.glob("*.avsc"):
        (tmp_path / path.name).write_text(path.read_text())
    lock = tmp_path / "released.lock"
    avro.write_lock(lock, avro.released_now(avro.load_schemas(tmp_path)))
    old = avro.load_schemas(tmp_path)
    doc = json.loads((tmp_path / f"{SEALED}.avsc").read_text())
    doc["fields"].append({"name": "comment", "type": ["null", "string"], "default": None})
    (tmp_path / f"{SEALED}.avsc").write_text(json.dumps(doc))
    new = avro.load_schemas(tmp_path, lock)
    assert new.fingerprints[SEALED] != old.fingerprints[SEALED]
    assert avro.decode(new, avro.encode(old, SEALED, RECORD), SEALED) == RECORD


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_decode_of_random_bytes_raises_only_typed_errors(blob: bytes) -> None:
    """Fuzz: decoding arbitrary bytes behind a valid prefix raises only CaseBridgeError."""
    data = b"\xc3\x01" + SCHEMAS.fingerprints["casebridge.envelope.Envelope"] + blob
    with pytest.raises(CaseBridgeError):
        avro.decode(SCHEMAS, data, "casebridge.envelope.Envelope")
