"""The dual-signed handover record of ``handover.completed``.

The ``operational`` category of ``handover.completed`` holds a ``statement`` (who handed over whom
to whom, where, when) and two attestations, one by the handing and one by the receiving official:
each an Ed25519 signature over ``frame("casebridge/v1/handover")`` followed by the Avro body of
the statement. The officials' public keys travel in the attestation; binding an official id to a
key is the agency's business (out of band) and not checked here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from casebridge.core import avro
from casebridge.core.errors import BadSignature, Malformed
from casebridge.core.keys import RAW, RAW_PUBLIC, key_id, signature_valid
from casebridge.core.sealing import frame

EVENT_TYPE = "handover.completed"
LABEL = frame("casebridge/v1/handover")
ROLES = ("handing", "receiving")


def statement_schema(schemas: avro.SchemaSet) -> avro.Schema:
    """The parsed schema of the statement inside the current ``handover.completed`` payload."""
    operational = schemas.sections[schemas.fingerprints[schemas.event_schemas[EVENT_TYPE]]]
    field = next(f for f in operational["operational"]["fields"] if f["name"] == "statement")
    return field["type"]


def statement_bytes(schemas: avro.SchemaSet, statement: Mapping[str, Any]) -> bytes:
    """The exact bytes both officials sign."""
    return LABEL + avro.encode_body(statement_schema(schemas), statement)


def attest(
    schemas: avro.SchemaSet, statement: Mapping[str, Any], role: str, official_id: str,
    key: Ed25519PrivateKey,
) -> dict[str, Any]:
    """One official's attestation record (``role`` is handing or receiving)."""
    public = key.public_key().public_bytes(RAW, RAW_PUBLIC)
    return {
        "participant": statement[f"{role}_participant"],
        "official_id": official_id,
        "key_id": key_id(public),
        "public_key": public,
        "signature": key.sign(statement_bytes(schemas, statement)),
    }


def check_attestations(schemas: avro.SchemaSet, operational: Mapping[str, Any]) -> None:
    """Both signatures verify over the statement and name the statement's parties and officials."""
    statement = operational["statement"]
    signed = statement_bytes(schemas, statement)
    for role in ROLES:
        att = operational[role]
        if (att["participant"], att["official_id"]) != (
            statement[f"{role}_participant"], statement[f"{role}_official_id"]
        ) or att["key_id"] != key_id(att["public_key"]):
            raise Malformed(f"{role} attestation does not match the statement")
        if not signature_valid(att["public_key"], att["signature"], signed):
            raise BadSignature(f"{role} official's signature does not verify")
