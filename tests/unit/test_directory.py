"""The secretariat-signed directory: signature, trust anchor, expiry, key lookups in time."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from casebridge.core import avro
from casebridge.core.directory import (
    DirectoryExpired,
    check_valid,
    encryption_key,
    parse_participants,
    revoke,
    sign_directory,
    signing_key,
    verify_directory,
)
from casebridge.core.errors import (
    BadSignature,
    PolicyError,
    RevokedKey,
    UnknownKey,
    UnknownSchema,
    UnknownSender,
)
from casebridge.core.keys import generate_identity, signing_public
from tests.unit.envelope_factories import (
    DIRECTORY,
    EPOCH,
    IDS,
    NOW,
    ROOT,
    SCHEMAS,
    key_records,
    make_directory,
)

SECRETARIAT = IDS["REG.SECRETARIAT"]
ANCHOR = signing_public(SECRETARIAT)
SIGNED = sign_directory(SCHEMAS, DIRECTORY, SECRETARIAT)


def test_signed_directory_roundtrips_against_the_anchor() -> None:
    """verify_directory returns exactly the directory that was signed."""
    assert verify_directory(SCHEMAS, SIGNED, ANCHOR, NOW) == DIRECTORY


def test_directory_signed_by_another_key_is_unknown_key() -> None:
    """A directory not signed by the trust anchor's key is refused."""
    forged = sign_directory(SCHEMAS, DIRECTORY, generate_identity("REG.SECRETARIAT"))
    with pytest.raises(UnknownKey):
        verify_directory(SCHEMAS, forged, ANCHOR, NOW)


def test_tampered_directory_is_bad_signature() -> None:
    """Any change to the signed directory bytes breaks the signature."""
    outer = avro.decode(SCHEMAS, SIGNED, "casebridge.directory.SignedDirectory")
    body = bytearray(outer["directory"])
    body[-1] ^= 1
    tampered = avro.encode(SCHEMAS, "casebridge.directory.SignedDirectory",
                           {**outer, "directory": bytes(body)})
    with pytest.raises(BadSignature):
        verify_directory(SCHEMAS, tampered, ANCHOR, NOW)


def test_expired_directory_fails_closed() -> None:
    """A directory past expires_at raises DirectoryExpired (code unknown_key)."""
    with pytest.raises(DirectoryExpired) as err:
        verify_directory(SCHEMAS, SIGNED, ANCHOR, DIRECTORY.expires_at + timedelta(seconds=1))
    assert err.value.code == "unknown_key"


def test_garbage_directory_is_a_typed_error() -> None:
    """Bytes that are no directory at all raise a typed error."""
    with pytest.raises(UnknownSchema):
        verify_directory(SCHEMAS, b"\xc3\x01" + b"\x07" * 20, ANCHOR, NOW)


def test_lookups_name_the_missing_participant_or_key() -> None:
    """Unknown participant -> UnknownSender, unknown key id -> UnknownKey."""
    with pytest.raises(UnknownSender):
        signing_key(DIRECTORY, "VN.MOLISA", "x")
    with pytest.raises(UnknownKey):
        signing_key(DIRECTORY, "TH.MSDHS", "0" * 16)


def test_key_validity_and_revocation_at_a_time() -> None:
    """check_valid: revoked at/after -> RevokedKey; outside the window -> UnknownKey."""
    key = key_records(IDS["TH.MSDHS"], EPOCH, until=NOW)[0]
    check_valid(key, NOW - timedelta(days=1))
    with pytest.raises(UnknownKey):
        check_valid(key, NOW)
    with pytest.raises(RevokedKey):
        check_valid(replace(key, revoked_at=EPOCH), NOW - timedelta(days=1))


def test_encryption_key_is_the_newest_valid_one() -> None:
    """After rotation, seal uses the newest unrevoked encryption key."""
    new = generate_identity("KH.MOSVY")
    later = key_records(new, NOW - timedelta(days=1))
    directory = make_directory(extra_keys={"KH.MOSVY": later})
    assert encryption_key(directory, "KH.MOSVY", NOW).key_id == new.encryption_key_id
    revoked = revoke(directory, new.encryption_key_id, NOW - timedelta(hours=1))
    assert encryption_key(revoked, "KH.MOSVY", NOW).key_id == IDS["KH.MOSVY"].encryption_key_id


def test_revoking_an_unknown_key_is_unknown_key() -> None:
    """revoke refuses a key id that is not in the directory."""
    with pytest.raises(UnknownKey):
        revoke(DIRECTORY, "feedfeedfeedfeed", NOW)


def test_deploy_participants_file_lists_the_agreed_ids() -> None:
    """deploy/directory/participants.yaml holds the agreed participants and roles."""
    import yaml

    path = ROOT / "deploy" / "directory" / "participants.yaml"
    people = parse_participants(yaml.safe_load(path.read_text()), str(path))
    roles = {p.id: p.role for p in people}
    assert roles["REG.SECRETARIAT"] == "secretariat"
    assert {p for p, r in roles.items() if r == "ngo"} == {"KH.CWCC", "KH.CCPCR", "LA.LWU", "VN.VWU"}
    assert {p for p, r in roles.items() if r == "police"} == {
        "TH.RTP", "KH.MOI", "LA.MPS", "MM.MPF", "VN.MPS", "CN.MPS"}
    services = {"REG.SECRETARIAT", "REG.ROUTER", "REG.DEADLINES"}
    assert {p for p, r in roles.items() if r == "secretariat"} == services
    assert len(roles) == 19


@pytest.mark.parametrize("doc", [
    None,
    {"participants": [{"id": "TH.MSDHS", "role": "government", "name": "x"}]},
    {"participants": [{"id": "REG.SECRETARIAT", "role": "boss", "name": "x"}]},
    {"participants": [{"id": "XX.FOO", "role": "ngo", "name": "x"}]},
])
def test_bad_participants_documents_are_policy_errors(doc: object) -> None:
    """A participants file without the secretariat, with bad roles or ids is refused."""
    with pytest.raises(PolicyError):
        parse_participants(doc, "participants.yaml")


def test_built_directory_equals_its_wire_decoding_at_microsecond_times() -> None:
    """Times are kept at millisecond precision so a signed directory decodes to the same value."""
    odd = NOW - timedelta(microseconds=4321)
    directory = make_directory(issued_at=odd, extra_keys={
        "TH.MSDHS": key_records(generate_identity("TH.MSDHS"), odd)})
    signed = sign_directory(SCHEMAS, directory, SECRETARIAT)
    assert verify_directory(SCHEMAS, signed, ANCHOR, NOW) == directory
