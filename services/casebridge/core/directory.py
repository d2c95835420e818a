"""The secretariat-signed directory: build, sign, verify, and key lookups at a point in time.

Wire form: ``casebridge.directory.SignedDirectory`` (signer, key id, the exact single-object bytes
of ``casebridge.directory.Directory``, Ed25519 signature over those bytes), verified against a
trust anchor (the secretariat's raw Ed25519 public key, distributed out of band) before decoding.
An expired directory fails closed with ``DirectoryExpired`` (code ``unknown_key``: no key in it
can be trusted any more).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Literal, cast

from casebridge.core import avro
from casebridge.core.errors import (
    BadSignature,
    Malformed,
    PolicyError,
    RevokedKey,
    UnknownKey,
    UnknownSender,
)
from casebridge.core.keys import Identity, key_id, signature_valid
from casebridge.core.model import (
    PARTICIPANT_ID,
    REGION,
    ROLES,
    Directory,
    KeyRecord,
    Participant,
    country_of,
)

SECRETARIAT = f"{REGION}.SECRETARIAT"
DIRECTORY = "casebridge.directory.Directory"
SIGNED_DIRECTORY = "casebridge.directory.SignedDirectory"


class DirectoryExpired(UnknownKey):
    """The directory is past ``expires_at``: processing stops until a fresh one arrives."""

    code = "unknown_key"


def build_directory(
    participants: Iterable[Participant], version: int, issued_at: datetime, validity: timedelta
) -> Directory:
    """A directory of ``participants`` valid from ``issued_at`` for ``validity``.

    Times are truncated to the millisecond, the wire precision, so the value equals its decoding.
    """
    issued = millis(issued_at)
    return Directory(
        version=version,
        issued_at=issued,
        expires_at=millis(issued + validity),
        participants={
            p.id: replace(p, keys=tuple(map(key_in_millis, p.keys)))
            for p in sorted(participants, key=lambda p: p.id)
        },
    )


def millis(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def key_in_millis(key: KeyRecord) -> KeyRecord:
    return replace(
        key,
        valid_from=millis(key.valid_from),
        valid_until=None if key.valid_until is None else millis(key.valid_until),
        revoked_at=None if key.revoked_at is None else millis(key.revoked_at),
    )


def revoke(directory: Directory, revoked_key_id: str, at: datetime) -> Directory:
    """The same directory with key ``revoked_key_id`` revoked from ``at`` (UnknownKey if absent)."""
    found = False
    people: dict[str, Participant] = {}
    for pid, member in directory.participants.items():
        keys = tuple(
            replace(k, revoked_at=millis(at)) if k.key_id == revoked_key_id else k
            for k in member.keys
        )
        found = found or keys != member.keys
        people[pid] = replace(member, keys=keys)
    if not found:
        raise UnknownKey(f"no key {revoked_key_id} in the directory")
    return replace(directory, participants=people)


def key_to_record(key: KeyRecord) -> dict[str, Any]:
    return {
        "key_id": key.key_id, "use": key.use, "public_key": key.public_key,
        "valid_from": key.valid_from, "valid_until": key.valid_until, "revoked_at": key.revoked_at,
    }


def key_from_record(rec: Mapping[str, Any]) -> KeyRecord:
    if rec["use"] not in ("sign", "encrypt") or len(rec["public_key"]) != 32:
        raise Malformed(f"directory key {rec['key_id']}: bad use or key length")
    return KeyRecord(
        key_id=rec["key_id"], use=cast(Literal["sign", "encrypt"], rec["use"]),
        public_key=rec["public_key"], valid_from=rec["valid_from"],
        valid_until=rec["valid_until"], revoked_at=rec["revoked_at"],
    )


def to_record(directory: Directory) -> dict[str, Any]:
    """The ``casebridge.directory.Directory`` Avro record of a directory."""
    return {
        "version": directory.version,
        "issued_at": directory.issued_at,
        "expires_at": directory.expires_at,
        "participants": [
            {"id": p.id, "country": p.country, "role": p.role, "name": p.name,
             "keys": [key_to_record(k) for k in p.keys]}
            for p in directory.participants.values()
        ],
    }


def from_record(rec: Mapping[str, Any]) -> Directory:
    people = [
        Participant(p["id"], p["country"], p["role"], p["name"],
                    tuple(key_from_record(k) for k in p["keys"]))
        for p in rec["participants"]
    ]
    return Directory(rec["version"], rec["issued_at"], rec["expires_at"], {p.id: p for p in people})


def sign_directory(schemas: avro.SchemaSet, directory: Directory, secretariat: Identity) -> bytes:
    """The SignedDirectory wire bytes, signed with the secretariat's Ed25519 key."""
    body = avro.encode(schemas, DIRECTORY, to_record(directory))
    return avro.encode(schemas, SIGNED_DIRECTORY, {
        "signer": secretariat.participant,
        "key_id": secretariat.signing_key_id,
        "directory": body,
        "signature": secretariat.signing_key.sign(body),
    })


def verify_directory(
    schemas: avro.SchemaSet, data: bytes, anchor: bytes, now: datetime
) -> Directory:
    """Check the signature against the trust anchor, then decode; fail closed when expired."""
    outer = avro.decode(schemas, data, SIGNED_DIRECTORY)
    if outer["key_id"] != key_id(anchor):
        raise UnknownKey(f"directory signed with {outer['key_id']}, not the trust anchor")
    if not signature_valid(anchor, outer["signature"], outer["directory"]):
        raise BadSignature("directory signature does not verify")
    directory = from_record(avro.decode(schemas, outer["directory"], DIRECTORY))
    check_current(directory, now)
    return directory


def check_current(directory: Directory, now: datetime) -> None:
    """Fail closed once the directory has expired (or before it was issued)."""
    if not directory.issued_at <= now < directory.expires_at:
        raise DirectoryExpired(
            f"directory v{directory.version} valid {directory.issued_at.isoformat()} to "
            f"{directory.expires_at.isoformat()}, now {now.isoformat()}"
        )


def member(directory: Directory, participant_id: str) -> Participant:
    found = directory.participants.get(participant_id)
    if found is None:
        raise UnknownSender(f"{participant_id} is not in directory v{directory.version}")
    return found


def signing_key(directory: Directory, participant_id: str, wanted: str) -> KeyRecord:
    """The signing key ``wanted`` of a participant, whatever its validity (see ``check_valid``)."""
    for key in member(directory, participant_id).keys:
        if key.key_id == wanted and key.use == "sign":
            return key
    raise UnknownKey(f"{participant_id} has no signing key {wanted}")


def check_valid(key: KeyRecord, at: datetime) -> None:
    """Revoked at or before ``at`` -> RevokedKey; outside its validity window -> UnknownKey."""
    if key.revoked_at is not None and key.revoked_at <= at:
        raise RevokedKey(f"key {key.key_id} revoked at {key.revoked_at.isoformat()}")
    if at < key.valid_from or (key.valid_until is not None and at >= key.valid_until):
        raise UnknownKey(f"key {key.key_id} not valid at {at.isoformat()}")


def is_valid(key: KeyRecord, at: datetime) -> bool:
    try:
        check_valid(key, at)
    except (RevokedKey, UnknownKey):
        return False
    return True


def encryption_key(directory: Directory, participant_id: str, at: datetime) -> KeyRecord:
    """The newest encryption key of a participant that is valid and unrevoked at ``at``."""
    keys = [k for k in member(directory, participant_id).keys if k.use == "encrypt"]
    valid = [k for k in keys if is_valid(k, at)]
    if not valid:
        raise UnknownKey(f"{participant_id} has no valid encryption key at {at.isoformat()}")
    return max(valid, key=lambda k: k.valid_from)


def parse_participants(doc: Any, source: str) -> tuple[Participant, ...]:
    """Participants (without keys) of a loaded ``deploy/directory/participants.yaml`` document."""
    entries = doc.get("participants") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise PolicyError(f"{source}: expected a mapping with a 'participants' list")
    people = tuple(parse_participant(entry, f"{source}: participants[{i}]")
                   for i, entry in enumerate(entries))
    ids = [p.id for p in people]
    if len(set(ids)) != len(ids) or SECRETARIAT not in ids:
        raise PolicyError(f"{source}: participant ids must be unique and include {SECRETARIAT}")
    return people


def parse_participant(entry: Any, where: str) -> Participant:
    if not isinstance(entry, dict) or not {"id", "role", "name"} <= entry.keys():
        raise PolicyError(f"{where}: needs id, role and name")
    pid, role = str(entry["id"]), str(entry["role"])
    if not PARTICIPANT_ID.match(pid) or role not in ROLES:
        raise PolicyError(f"{where}: bad participant id {pid!r} or role {role!r}")
    return Participant(id=pid, country=country_of(pid), role=role, name=str(entry["name"]))
