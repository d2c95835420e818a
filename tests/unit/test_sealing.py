"""Sealed envelopes: roundtrip, per-recipient confidentiality, and one test per reject code."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from casebridge.core import avro, handover, sealing
from casebridge.core.directory import DirectoryExpired, revoke
from casebridge.core.errors import (
    BadSignature,
    CaseBridgeError,
    Malformed,
    Oversized,
    RevokedKey,
    SchemaInvalid,
    Stale,
    UnknownKey,
    UnknownSchema,
    UnknownSender,
)
from casebridge.core.keys import generate_identity, signature_valid
from casebridge.core.model import EVENT_TYPES, Header
from casebridge.core.sealing import NotARecipient
from tests.unit.envelope_factories import (
    DIRECTORY,
    EPOCH,
    GRANTS,
    IDS,
    MAX_AGE,
    NOW,
    SCHEMAS,
    example_payload,
    header,
    key_records,
    make_directory,
    payloads,
    resign,
)

SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
RECIPIENTS = tuple(GRANTS)


def seal(head: Header | None = None, payload: dict[str, Any] | None = None, **kw: Any) -> bytes:
    head = head or header()
    payload = example_payload(head.event_type) if payload is None else payload
    sender = kw.pop("sender", IDS[head.sender])
    return sealing.seal(head, payload, sender, kw.pop("grants", GRANTS),
                        kw.pop("directory", DIRECTORY), kw.pop("now", NOW), schemas=SCHEMAS, **kw)


def open_as(data: bytes, who: str = "KH.MOSVY", **kw: Any) -> sealing.OpenedEvent:
    return sealing.open(data, kw.pop("me", IDS[who]), kw.pop("directory", DIRECTORY),
                        kw.pop("now", NOW), kw.pop("max_age", MAX_AGE), schemas=SCHEMAS, **kw)


def verify(data: bytes, **kw: Any) -> sealing.VerifiedEnvelope:
    return sealing.verify(data, kw.pop("directory", DIRECTORY), kw.pop("now", NOW),
                          kw.pop("max_age", MAX_AGE), schemas=SCHEMAS, **kw)


SAMPLE = seal()


# --- roundtrip and confidentiality ------------------------------------------------------------


@SETTINGS
@given(st.sampled_from(EVENT_TYPES).flatmap(lambda t: st.tuples(st.just(t), payloads(t))),
       st.dictionaries(st.sampled_from(RECIPIENTS),
                       st.frozensets(st.sampled_from(("operational", "identity", "health",
                                                      "logistics", "legal", "reintegration"))),
                       min_size=1))
def test_seal_open_roundtrip_for_every_event_type(
    event: tuple[str, dict[str, Any]], grants: dict[str, frozenset[str]]
) -> None:
    """Each recipient opens exactly the present categories granted to it, values unchanged."""
    event_type, payload = event
    data = seal(header(event_type), payload, grants=grants)
    for recipient, granted in grants.items():
        opened = open_as(data, recipient)
        expected = {c: v for c, v in payload.items() if c in granted}
        assert opened.payload == expected
        assert set(opened.categories) == set(expected)
        assert opened.header.recipients == tuple(sorted(grants))


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_full_payload_of_every_event_type_roundtrips(event_type: str) -> None:
    """A payload with every category of the event type comes back whole to a full grantee."""
    payload = example_payload(event_type)
    grants = {"KH.MOSVY": frozenset(payload)}
    assert open_as(seal(header(event_type), payload, grants=grants)).payload == payload


def test_recipient_never_obtains_a_category_not_granted() -> None:
    """The NGO granted only `operational` gets no identity even though the envelope carries it."""
    opened = open_as(SAMPLE, "KH.CWCC")
    assert opened.categories == ("operational",)
    assert set(opened.payload) == {"operational"}


def test_verify_reports_sections_and_readers_without_keys() -> None:
    """The router sees categories and who may read them, and the hash of the wire bytes."""
    verified = verify(SAMPLE)
    readers = {s.category: s.recipients for s in verified.sections}
    assert readers == {"operational": ("KH.CWCC", "KH.MOSVY", "TH.RTP"),
                       "identity": ("KH.MOSVY",), "logistics": ("KH.MOSVY", "TH.RTP")}
    assert verified.hash == hashlib.sha256(SAMPLE).digest() == sealing.envelope_hash(SAMPLE)


def test_seal_sets_sender_key_recipients_schema_and_millisecond_time() -> None:
    """seal fills the derived header fields and truncates created_at to the wire precision."""
    second = NOW - timedelta(seconds=1)
    head = header(created_at=second + timedelta(microseconds=123456), prev_hash=b"\x01" * 32)
    got = verify(seal(head)).header
    assert got.sender_key_id == IDS["TH.MSDHS"].signing_key_id
    assert got.recipients == ("KH.CWCC", "KH.MOSVY", "TH.RTP")
    assert got.payload_schema == SCHEMAS.fingerprints["casebridge.events.HandoverScheduled"]
    assert got.created_at == second + timedelta(microseconds=123000)
    assert got.prev_hash == b"\x01" * 32


def test_chain_hash_links_consecutive_envelopes() -> None:
    """The next header's prev_hash is the envelope_hash of the previous wire bytes."""
    second = seal(header(sequence=2, prev_hash=sealing.envelope_hash(SAMPLE)))
    assert verify(second).header.prev_hash == hashlib.sha256(SAMPLE).digest()


def test_identity_repr_holds_no_private_key() -> None:
    """Private keys never appear in a repr (and so never in a log line)."""
    text = repr(IDS["TH.MSDHS"])
    assert "PrivateKey" not in text and "signing_key=" not in text


# --- tampering and fuzzing ---------------------------------------------------------------------


@settings(max_examples=120, deadline=None)
@given(st.data())
def test_any_single_byte_change_is_rejected(data: st.DataObject) -> None:
    """Changing any one byte of an envelope makes verify and open raise a typed error."""
    index = data.draw(st.integers(0, len(SAMPLE) - 1))
    delta = data.draw(st.integers(1, 255))
    mutated = bytearray(SAMPLE)
    mutated[index] ^= delta
    with pytest.raises(CaseBridgeError):
        verify(bytes(mutated))
    with pytest.raises(CaseBridgeError):
        open_as(bytes(mutated))


@settings(max_examples=150, deadline=None)
@given(st.one_of(
    st.binary(max_size=2000),
    st.binary(max_size=64).map(lambda tail: avro.MAGIC + SCHEMAS.fingerprints[sealing.SEALED] + tail),
    st.tuples(st.integers(0, len(SAMPLE)), st.integers(0, len(SAMPLE)), st.binary(max_size=8))
    .map(lambda t: SAMPLE[: t[0]] + t[2] + SAMPLE[t[1]:]),
))
def test_open_of_random_or_mutated_bytes_raises_only_typed_errors(blob: bytes) -> None:
    """Fuzz: arbitrary, prefixed or spliced bytes give a CaseBridgeError, never anything else."""
    if blob == SAMPLE:
        return
    with pytest.raises(CaseBridgeError):
        open_as(blob)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=400))
def test_validly_signed_garbage_raises_only_typed_errors(inner: bytes) -> None:
    """A real signature over garbage inner bytes still yields only a typed error."""
    sender = IDS["TH.MSDHS"]
    body = avro.MAGIC + SCHEMAS.fingerprints[sealing.ENVELOPE] + inner
    data = avro.encode(SCHEMAS, sealing.SEALED, {
        "signer": sender.participant, "key_id": sender.signing_key_id,
        "envelope": body, "signature": sender.signing_key.sign(body)})
    with pytest.raises(CaseBridgeError):
        open_as(data)


# --- one test per reject code -----------------------------------------------------------------


def test_truncated_envelope_is_malformed() -> None:
    """Truncated bytes raise Malformed (code malformed)."""
    with pytest.raises(Malformed) as err:
        open_as(SAMPLE[:-10])
    assert err.value.code == "malformed"


def test_unknown_fingerprint_is_unknown_schema() -> None:
    """An outer fingerprint that no schema has raises UnknownSchema."""
    data = SAMPLE[:2] + b"\xff" * 8 + SAMPLE[10:]
    with pytest.raises(UnknownSchema) as err:
        open_as(data)
    assert err.value.code == "unknown_schema"


def test_unknown_payload_fingerprint_is_unknown_schema() -> None:
    """A signed header naming an unknown payload schema raises UnknownSchema."""
    data = resign(SAMPLE, IDS["TH.MSDHS"], lambda r: r["header"].update(payload_schema=b"\0" * 8))
    with pytest.raises(UnknownSchema):
        verify(data)


def test_record_of_another_schema_is_schema_invalid() -> None:
    """A well-formed single object of a different schema raises SchemaInvalid."""
    data = avro.encode(SCHEMAS, sealing.ENVELOPE, {"header": sealing.header_to_record(
        verify(SAMPLE).header), "sections": [], "wraps": []})
    with pytest.raises(SchemaInvalid) as err:
        open_as(data)
    assert err.value.code == "schema_invalid"


def test_payload_schema_of_another_event_type_is_schema_invalid() -> None:
    """A header whose payload fingerprint belongs to another event type raises SchemaInvalid."""
    other = SCHEMAS.fingerprints["casebridge.events.CaseClosed"]
    data = resign(SAMPLE, IDS["TH.MSDHS"], lambda r: r["header"].update(payload_schema=other))
    with pytest.raises(SchemaInvalid):
        verify(data)


def test_seal_rejects_payload_that_does_not_match_its_schema() -> None:
    """seal writes strictly: an unknown field raises SchemaInvalid before anything is sent."""
    payload = example_payload("handover.scheduled")
    payload["operational"]["victim_name"] = "never here"
    with pytest.raises(SchemaInvalid):
        seal(payload=payload)


def test_sender_missing_from_directory_is_unknown_sender() -> None:
    """A signer the directory does not list raises UnknownSender."""
    directory = make_directory({k: v for k, v in IDS.items() if k != "TH.MSDHS"})
    with pytest.raises(UnknownSender) as err:
        verify(SAMPLE, directory=directory)
    assert err.value.code == "unknown_sender"


def test_signing_key_missing_from_directory_is_unknown_key() -> None:
    """A key id the sender's directory entry lacks raises UnknownKey."""
    imposter = generate_identity("TH.MSDHS")
    with pytest.raises(UnknownKey) as err:
        verify(seal(sender=imposter))
    assert err.value.code == "unknown_key"


def test_event_created_before_key_validity_is_unknown_key() -> None:
    """A key is only good for events created inside its validity window."""
    data = seal(header(created_at=EPOCH - timedelta(days=1)))
    with pytest.raises(UnknownKey):
        verify(data, now=EPOCH)


def test_revoked_key_rejects_events_created_after_revocation() -> None:
    """A key revoked before the event's created time raises RevokedKey."""
    directory = revoke(DIRECTORY, IDS["TH.MSDHS"].signing_key_id, NOW - timedelta(hours=1))
    with pytest.raises(RevokedKey) as err:
        verify(SAMPLE, directory=directory)
    assert err.value.code == "revoked_key"


def test_revoked_key_still_verifies_events_created_before_revocation() -> None:
    """Revocation is from a point in time: earlier, in-flight events still verify."""
    directory = revoke(DIRECTORY, IDS["TH.MSDHS"].signing_key_id, NOW - timedelta(seconds=1))
    assert verify(SAMPLE, directory=directory).header.sender == "TH.MSDHS"


def test_rotated_key_verifies_old_events_but_not_new_ones() -> None:
    """After rotation the old key verifies what it signed while valid, and nothing newer."""
    old, new = IDS["TH.MSDHS"], generate_identity("TH.MSDHS")
    rotated_at = NOW - timedelta(hours=2)
    ids = {**IDS, "TH.MSDHS": new}
    directory = make_directory(ids, {"TH.MSDHS": key_records(old, EPOCH, until=rotated_at)})
    before = seal(header(created_at=rotated_at - timedelta(hours=1)), sender=old)
    assert verify(before, directory=directory).header.sender_key_id == old.signing_key_id
    with pytest.raises(UnknownKey):
        verify(seal(sender=old), directory=directory)
    assert verify(seal(sender=new, directory=directory), directory=directory)


def test_flipped_signature_is_bad_signature() -> None:
    """A changed signature byte raises BadSignature."""
    data = SAMPLE[:-1] + bytes([SAMPLE[-1] ^ 1])
    with pytest.raises(BadSignature) as err:
        open_as(data)
    assert err.value.code == "bad_signature"


def test_header_sender_other_than_signer_is_bad_signature() -> None:
    """A participant signing an envelope whose header names someone else raises BadSignature."""
    data = resign(SAMPLE, IDS["TH.RTP"], lambda r: None)
    with pytest.raises(BadSignature):
        verify(data)


def test_old_event_is_stale() -> None:
    """An event older than max_age raises Stale."""
    with pytest.raises(Stale) as err:
        verify(SAMPLE, now=NOW + MAX_AGE + timedelta(minutes=2))
    assert err.value.code == "stale"


def test_event_from_the_future_is_stale() -> None:
    """An event created beyond the allowed clock skew raises Stale."""
    with pytest.raises(Stale):
        verify(seal(header(created_at=NOW + timedelta(hours=1))))


def test_oversized_input_is_rejected_before_decoding() -> None:
    """Input above the size limit raises Oversized on open and on seal."""
    with pytest.raises(Oversized) as err:
        open_as(SAMPLE, max_size=len(SAMPLE) - 1)
    assert err.value.code == "oversized"
    with pytest.raises(Oversized):
        seal(max_size=200)


def test_non_recipient_cannot_open() -> None:
    """A participant outside header.recipients gets recipient_not_permitted."""
    with pytest.raises(NotARecipient) as err:
        open_as(SAMPLE, "LA.MOLSW")
    assert err.value.code == "recipient_not_permitted"


def test_expired_directory_fails_closed() -> None:
    """With an expired directory nothing verifies (DirectoryExpired, code unknown_key)."""
    with pytest.raises(DirectoryExpired) as err:
        verify(SAMPLE, now=DIRECTORY.expires_at)
    assert err.value.code == "unknown_key"


def test_section_moved_between_envelopes_does_not_open() -> None:
    """A section copied into another envelope (even re-signed by its sender) does not decrypt."""
    donor = avro.decode(SCHEMAS, avro.decode(SCHEMAS, seal(), sealing.SEALED)["envelope"],
                        sealing.ENVELOPE)

    def swap(record: dict[str, Any]) -> None:
        record["sections"] = donor["sections"]
        record["wraps"] = donor["wraps"]

    with pytest.raises(Malformed):
        open_as(resign(SAMPLE, IDS["TH.MSDHS"], swap))


def test_wrap_for_a_retired_encryption_key_is_unknown_key() -> None:
    """A recipient holding a newer encryption key than the one wrapped for gets UnknownKey."""
    rotated = replace(IDS["KH.MOSVY"], encryption_key_id="0" * 16)
    with pytest.raises(UnknownKey):
        open_as(SAMPLE, me=rotated)


def test_wrap_naming_unknown_section_is_malformed() -> None:
    """A key wrap listing a category with no section is rejected by verify."""
    def bad(record: dict[str, Any]) -> None:
        record["wraps"][0]["categories"] = ["health"]

    with pytest.raises(Malformed):
        verify(resign(SAMPLE, IDS["TH.MSDHS"], bad))


def test_seal_for_recipient_without_valid_key_is_unknown_key() -> None:
    """seal refuses a recipient whose encryption keys are all revoked."""
    directory = revoke(DIRECTORY, IDS["KH.MOSVY"].encryption_key_id, NOW - timedelta(days=1))
    with pytest.raises(UnknownKey):
        seal(directory=directory)


# --- handover.completed: two officials' signatures ---------------------------------------------


def handover_operational() -> dict[str, Any]:
    statement = {
        "event_id": "e1", "case_ref": "CASE-7f3a", "checkpoint": "TH Aranyaprathet - KH Poipet",
        "completed_at": NOW - timedelta(hours=1), "handing_participant": "TH.MSDHS",
        "receiving_participant": "KH.MOSVY", "handing_official_id": "TH-4411",
        "receiving_official_id": "KH-0192", "persons": 1,
    }
    return {
        "statement": statement,
        "handing": handover.attest(SCHEMAS, statement, "handing", "TH-4411",
                                   Ed25519PrivateKey.generate()),
        "receiving": handover.attest(SCHEMAS, statement, "receiving", "KH-0192",
                                     Ed25519PrivateKey.generate()),
        "note": None,
    }


def test_handover_completed_carries_two_verifiable_signatures() -> None:
    """Both officials' signatures survive sealing and verify over the statement."""
    payload = {"operational": handover_operational()}
    data = seal(header("handover.completed"), payload, grants={"KH.MOSVY": frozenset(payload)})
    handover.check_attestations(SCHEMAS, open_as(data).payload["operational"])


def test_handover_statement_changed_after_signing_is_bad_signature() -> None:
    """A statement edited after the officials signed no longer verifies."""
    operational = handover_operational()
    operational["statement"] = {**operational["statement"], "persons": 2}
    with pytest.raises(BadSignature):
        handover.check_attestations(SCHEMAS, operational)


# --- the one Ed25519 check (core/keys.signature_valid, libsodium) -----------------------------


@settings(max_examples=60, deadline=None)
@given(message=st.binary(max_size=2048), flip=st.integers(min_value=0))
def test_libsodium_accepts_what_cryptography_signs_and_refuses_a_flipped_bit(
    message: bytes, flip: int
) -> None:
    """Signatures made with cryptography (as every node signs) verify; one flipped bit of the
    signature or of the message does not."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes_raw()
    signature = key.sign(message)
    assert signature_valid(public, signature, message)
    bit = flip % (8 * len(signature))
    bad = bytearray(signature)
    bad[bit // 8] ^= 1 << (bit % 8)
    assert not signature_valid(public, bytes(bad), message)
    if message:
        changed = bytearray(message)
        changed[flip % len(message)] ^= 1
        assert not signature_valid(public, signature, bytes(changed))


def test_a_signature_of_the_wrong_size_is_invalid_and_a_key_of_the_wrong_size_malformed() -> None:
    key = Ed25519PrivateKey.generate()
    public, signature = key.public_key().public_bytes_raw(), key.sign(b"m")
    assert not signature_valid(public, signature[:63], b"m")
    assert not signature_valid(public, signature + b"\0", b"m")
    with pytest.raises(Malformed):
        signature_valid(public[:31], signature, b"m")


def test_a_small_order_public_key_is_refused() -> None:
    """libsodium refuses the identity point as a key, whose 'signatures' anybody can forge: with
    A = identity and R = identity, S = 0 satisfies [S]B = R + [k]A for every message."""
    identity = bytes([1]) + bytes(31)
    forged = identity + bytes(32)  # R = identity, S = 0
    assert not signature_valid(identity, forged, b"any message")
