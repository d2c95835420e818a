"""Agreement documents: strict parsing with file and line, and loading only what all parties signed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from casebridge.core.agreements import (
    AgreementNotSigned,
    canonical_bytes,
    load_agreements,
    parse_agreement,
    parse_signatures,
    sign_agreement,
    signatures_json,
)
from casebridge.core.errors import CaseBridgeError, PolicyError
from tests.unit.policy_fixtures import (
    NOW,
    committed,
    directory,
    document_texts,
    private_key,
    sign_all,
    signing_key,
)

MINIMAL = """\
id: TH-KH
version: 2
title: "test"
kind: bilateral
parties: [TH, KH]
signatories: [TH.MSDHS, KH.MOSVY]
in_force:
  from: 2003-05-31
events:
  origin.notified:
    senders: {TH: [TH.MSDHS], KH: [government]}
    consent: [origin_notification]
    recipients:
      KH:
        - {participant: KH.MOSVY, categories: [operational, identity]}
deadlines:
  - name: nv
    opens_on: origin.notified
    closes_on: nationality_verification.responded
    party: KH
    working_days: 30
    source: configuration
"""
SIGNERS = ("TH.MSDHS", "KH.MOSVY")


def test_every_committed_agreement_parses() -> None:
    """The documents in deploy/agreements are all valid: eight agreements, ids unique."""
    assert sorted(a.id for a in committed()) == ["CN-MM", "CN-VN", "COMMIT-ACTIP", "KH-VN",
                                                  "TH-KH", "TH-LA", "TH-MM", "TH-VN"]


def test_minimal_document_parses_into_the_model() -> None:
    """A minimal document yields its rules with clause paths and exclusive in-force end."""
    doc = parse_agreement(MINIMAL, "x.yaml")
    rule = doc.events["origin.notified"]
    assert rule.consent == {"origin_notification"}
    assert rule.recipients[0].clause == "TH-KH v2 §events.origin.notified.recipients.KH[0]"
    assert doc.in_force_until is None and doc.in_force(NOW)
    assert doc.deadlines[0].working_days == 30


BROKEN = [
    # (replace this, with that, expected line, reason fragment)
    ("version: 2", "version: two", 2, "version must be an integer"),
    ("kind: bilateral", "kind: trilateral", 4, "is not one of bilateral, regional"),
    ("parties: [TH, KH]", "parties: [TH, KH, LA]", 5, "exactly 2 parties"),
    ("parties: [TH, KH]", "parties: [TH, XX]", 5, "unknown value 'XX'"),
    ("signatories: [TH.MSDHS, KH.MOSVY]", "signatories: [TH.MSDHS]", 6, "party KH has no signatory"),
    ("  from: 2003-05-31", "  from: someday", 8, "must be a date"),
    ("  from: 2003-05-31", "  from: 2003-05-31\n  until: 2001-01-01", 9, "before in_force.from"),
    ("  origin.notified:", "  origin.guessed:", 10, "unknown key 'origin.guessed'"),
    ("[TH.MSDHS], KH: [government]", "[TH.MSDHS], KH: [chief]", 11, "neither a role"),
    ("[TH.MSDHS], KH: [government]", "[KH.MOSVY], KH: [government]", 11,
     "nor a participant of TH"),
    ("consent: [origin_notification]", "consent: [everything]", 12, "unknown value"),
    ("participant: KH.MOSVY,", "participant: TH.MSDHS,", 15, "not a participant of KH"),
    ("participant: KH.MOSVY,", "role: ngo, participant: KH.MOSVY,", 15, "exactly one of"),
    ("categories: [operational, identity]", "categories: [operational, secrets]", 15,
     "unknown value 'secrets'"),
    ("categories: [operational, identity]", "categories: []", 15, "categories is empty"),
    ("    working_days: 30", "    working_days: 0", 21, "at least 1"),
    ("    source: configuration\n", "", 17, "lacks required key 'source'"),
    ("title: \"test\"\n", "", 1, "lacks required key 'title'"),
    ("version: 2\n", "version: 2\nversion: 3\n", 3, "duplicate key 'version'"),
    ("kind: bilateral", "kind: [bilateral", 5, "not valid YAML"),
]


@pytest.mark.parametrize(("old", "new", "line", "reason"), BROKEN)
def test_loader_errors_name_the_file_line_and_reason(old: str, new: str, line: int,
                                                     reason: str) -> None:
    """An invalid document raises PolicyError 'file:line: reason' at the offending node."""
    assert old in MINIMAL
    with pytest.raises(PolicyError) as caught:
        parse_agreement(MINIMAL.replace(old, new, 1), "deploy/agreements/TH-KH.yaml")
    assert caught.value.why.startswith(f"deploy/agreements/TH-KH.yaml:{line}: "), caught.value.why
    assert reason in caught.value.why


def test_policy_error_is_a_casebridge_error_with_a_stable_code() -> None:
    """Loader failures are CaseBridgeErrors (and ValueErrors) with a reject code."""
    with pytest.raises(CaseBridgeError) as caught:
        parse_agreement("", "empty.yaml")
    assert isinstance(caught.value, ValueError) and caught.value.code == "schema_invalid"


def load(text: str, sig: str | None, **directory_args: object) -> tuple[int, list[str]]:
    sigs = {} if sig is None else {"TH-KH": sig}
    loaded = load_agreements({"TH-KH.yaml": text}, sigs, directory(**directory_args), NOW)  # type: ignore[arg-type]
    return len(loaded.agreements), [e.why for e in loaded.errors]


def test_document_signed_by_every_signatory_is_loaded() -> None:
    """Both focal agencies signed with directory keys: the agreement loads."""
    assert load(MINIMAL, sign_all(MINIMAL, SIGNERS)) == (1, [])


def test_every_committed_document_loads_once_signed_by_its_signatories() -> None:
    """All eight committed documents load when each signatory signs with a run-time key."""
    texts = document_texts()
    sigs = {parse_agreement(t, s).id: sign_all(t, parse_agreement(t, s).signatories)
            for s, t in texts.items()}
    loaded = load_agreements(texts, sigs, directory(), NOW)
    assert (len(loaded.agreements), loaded.errors) == (8, ())


def test_unsigned_document_is_not_loaded() -> None:
    """No <id>.sig.json: not loaded, and the error says it is unsigned."""
    count, errors = load(MINIMAL, None)
    assert count == 0 and "unsigned" in errors[0] and errors[0].startswith("TH-KH.yaml:1:")


def test_document_signed_by_one_party_only_is_not_loaded() -> None:
    """A bilateral MOU needs both signatures: one is not enough."""
    count, errors = load(MINIMAL, sign_all(MINIMAL, ["TH.MSDHS"]))
    assert count == 0 and "lacks a valid signature by KH.MOSVY" in errors[0]


def test_tampered_document_is_not_loaded() -> None:
    """Changing one category after signing is detected (digest differs)."""
    tampered = MINIMAL.replace("[operational, identity]", "[operational, identity, health]")
    count, errors = load(tampered, sign_all(MINIMAL, SIGNERS))
    assert count == 0 and "differs from the signed document" in errors[0]


def test_tampered_document_with_a_forged_digest_is_not_loaded() -> None:
    """Rewriting the digest in the sig file does not help: the signatures do not verify."""
    tampered = MINIMAL.replace("working_days: 30", "working_days: 300")
    _, sigs = parse_signatures(sign_all(MINIMAL, SIGNERS), "sig")
    forged = signatures_json(parse_agreement(tampered, "t"), sigs)
    count, errors = load(tampered, forged)
    assert count == 0 and "lacks a valid signature" in errors[0]


def test_comments_are_signed_too() -> None:
    """Canonical bytes are the exact file text: editing a configuration comment breaks it."""
    edited = MINIMAL.replace("version: 2", "version: 2  # edited")
    assert canonical_bytes(edited) != canonical_bytes(MINIMAL)
    assert load(edited, sign_all(MINIMAL, SIGNERS))[0] == 0


def test_signature_with_a_key_the_directory_does_not_hold_is_refused() -> None:
    """A signature by a key id the directory does not list for the signatory is ignored."""
    doc = parse_agreement(MINIMAL, "m")
    stranger = sign_agreement(MINIMAL, "KH.MOSVY", "KH.MOSVY#sign-9", private_key("KH.MOI"), NOW)
    good = sign_agreement(MINIMAL, "TH.MSDHS", "TH.MSDHS#sign-1", private_key("TH.MSDHS"), NOW)
    count, errors = load(MINIMAL, signatures_json(doc, [good, stranger]))
    assert count == 0 and "KH.MOSVY" in errors[0]


def test_signature_by_the_wrong_private_key_is_refused() -> None:
    """KH.MOSVY's key id with another participant's private key does not verify."""
    doc = parse_agreement(MINIMAL, "m")
    sigs = [sign_agreement(MINIMAL, "TH.MSDHS", "TH.MSDHS#sign-1", private_key("TH.MSDHS"), NOW),
            sign_agreement(MINIMAL, "KH.MOSVY", "KH.MOSVY#sign-1", private_key("KH.MOI"), NOW)]
    assert load(MINIMAL, signatures_json(doc, sigs))[0] == 0


def test_signature_by_a_revoked_key_is_refused() -> None:
    """Once KH.MOSVY's key is revoked its signatures no longer count (fail closed)."""
    revoked = signing_key("KH.MOSVY", revoked_at=NOW - timedelta(hours=1))
    signed = sign_all(MINIMAL, SIGNERS, signed_at=NOW - timedelta(days=30))
    assert load(MINIMAL, signed, keys={"KH.MOSVY": revoked})[0] == 0


def test_signature_outside_the_key_validity_is_refused() -> None:
    """A signature dated before the key's valid_from does not count."""
    late_key = signing_key("TH.MSDHS", valid_from=NOW)
    early = sign_all(MINIMAL, SIGNERS, signed_at=NOW - timedelta(days=1))
    assert load(MINIMAL, early, keys={"TH.MSDHS": late_key})[0] == 0


def test_signature_dated_in_the_future_is_refused() -> None:
    """A signed_at after now is not trusted."""
    future = sign_all(MINIMAL, SIGNERS, signed_at=NOW + timedelta(days=1))
    assert load(MINIMAL, future)[0] == 0


def test_unreadable_signature_file_is_reported() -> None:
    """A corrupt <id>.sig.json is an error naming the file, not a crash."""
    count, errors = load(MINIMAL, "{not json")
    assert count == 0 and errors[0].startswith("TH-KH.sig.json:1: unreadable")


def test_one_bad_document_does_not_stop_the_others() -> None:
    """load_agreements keeps the good documents and collects the bad one's error."""
    texts = {"a.yaml": MINIMAL, "b.yaml": "id: [oops"}
    loaded = load_agreements(texts, {"TH-KH": sign_all(MINIMAL, SIGNERS)}, directory(), NOW)
    assert [a.id for a in loaded.agreements] == ["TH-KH"]
    assert isinstance(loaded.errors[0], PolicyError) and loaded.errors[0].why.startswith("b.yaml:")


def test_signature_errors_carry_the_bad_signature_code() -> None:
    """Signature failures are AgreementNotSigned with code bad_signature."""
    loaded = load_agreements({"a.yaml": MINIMAL}, {}, directory(), datetime(2026, 1, 1, tzinfo=UTC))
    assert isinstance(loaded.errors[0], AgreementNotSigned)
    assert loaded.errors[0].code == "bad_signature"
