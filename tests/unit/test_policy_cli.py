"""``casebridge agreements validate|sign`` and ``casebridge route explain``."""

from __future__ import annotations

import argparse
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from casebridge.cli import policy
from casebridge.core.agreements import load_agreements
from casebridge.core.keys import Identity, generate_identity, signing_public
from casebridge.core.model import Directory, KeyRecord, Participant
from casebridge.runtime import keystore
from tests.unit.policy_fixtures import AGREEMENTS_DIR, KEY_FROM, NOW, PARTICIPANTS, ROOT, committed

PARTICIPANTS_FILE = ROOT / "deploy" / "directory" / "participants.yaml"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="casebridge")
    policy.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code = args.func(args)
    return code, capsys.readouterr().out


def copy_agreements(tmp_path: Path) -> Path:
    folder = tmp_path / "agreements"
    shutil.copytree(AGREEMENTS_DIR, folder)
    return folder


def test_validate_accepts_the_committed_agreements(capsys: pytest.CaptureFixture[str]) -> None:
    """`agreements validate` on deploy/agreements exits 0 and lists each agreement."""
    code, out = run(["agreements", "validate", "--dir", str(AGREEMENTS_DIR)], capsys)
    assert code == 0, out
    assert out.count("\nok ") + out.startswith("ok ") == 8


def test_validate_reports_file_line_and_reason(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A broken document makes validate print file:line: reason and exit 1."""
    folder = copy_agreements(tmp_path)
    path = folder / "TH-LA.yaml"
    path.write_text(path.read_text().replace("kind: bilateral", "kind: trilateral"))
    code, out = run(["agreements", "validate", "--dir", str(folder)], capsys)
    assert code == 1
    assert f"{path}:9: kind: 'trilateral' is not one of bilateral, regional" in out


def test_validate_requires_file_name_to_match_the_id(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """TH-LA.yaml renamed to laos.yaml is refused: files are named by agreement id."""
    folder = copy_agreements(tmp_path)
    (folder / "TH-LA.yaml").rename(folder / "laos.yaml")
    code, out = run(["agreements", "validate", "--dir", str(folder)], capsys)
    assert code == 1 and "file name must be the agreement id (TH-LA.yaml)" in out


def keyed_directory(identities: list[Identity]) -> Directory:
    keys = {i.participant: (KeyRecord(i.signing_key_id, "sign", signing_public(i), KEY_FROM),)
            for i in identities}
    people = {pid: Participant(pid, pid.split(".")[0], role, pid, keys.get(pid, ()))
              for pid, role in PARTICIPANTS.items()}
    return Directory(1, KEY_FROM, NOW, people)


def state_texts(out: Path) -> tuple[dict[str, str], dict[str, str]]:
    docs = {str(p): p.read_text() for p in out.glob("*.yaml")}
    sigs = {p.name.removesuffix(".sig.json"): p.read_text() for p in out.glob("*.sig.json")}
    return docs, sigs


def test_sign_by_both_parties_makes_the_agreement_loadable(tmp_path: Path) -> None:
    """TH.MSDHS and KH.MOSVY sign into the state dir; TH-KH then loads, others await signers."""
    th, kh = generate_identity("TH.MSDHS"), generate_identity("KH.MOSVY")
    out = tmp_path / "state"
    first = policy.sign_dir(AGREEMENTS_DIR, out, th, NOW)
    assert any("signed TH-KH v2 as TH.MSDHS" in line and "awaiting KH.MOSVY" in line
               for line in first)
    second = policy.sign_dir(AGREEMENTS_DIR, out, kh, NOW)
    assert any("TH-KH v2" in line and "complete" in line for line in second)
    loaded = load_agreements(*state_texts(out), keyed_directory([th, kh]), NOW)
    assert [a.id for a in loaded.agreements] == ["TH-KH"]
    # copied are the 6 documents TH.MSDHS or KH.MOSVY sign; 5 of them await other signatories
    assert len(loaded.errors) == 5


def test_a_tampered_state_copy_is_not_loaded(tmp_path: Path) -> None:
    """Editing the signed copy in the state directory stops it from loading."""
    th, kh = generate_identity("TH.MSDHS"), generate_identity("KH.MOSVY")
    out = tmp_path / "state"
    policy.sign_dir(AGREEMENTS_DIR, out, th, NOW)
    policy.sign_dir(AGREEMENTS_DIR, out, kh, NOW)
    copy = out / "TH-KH.yaml"
    copy.write_text(copy.read_text().replace("KH.CWCC", "KH.CCPCR"))
    loaded = load_agreements(*state_texts(out), keyed_directory([th, kh]), NOW)
    assert "TH-KH" not in [a.id for a in loaded.agreements]
    assert any("TH-KH v2 differs from the signed document" in e.why for e in loaded.errors)


def write_event(tmp_path: Path, **event: object) -> Path:
    path = tmp_path / "event.json"
    path.write_text(json.dumps({"case_ref": "case-7f3a", **event}))
    return path


def participants_file(tmp_path: Path) -> Path:
    path = tmp_path / "participants.yaml"
    rows = [{"id": pid, "role": role, "name": pid} for pid, role in PARTICIPANTS.items()]
    path.write_text(json.dumps({"participants": rows}))  # JSON is YAML
    return path


def explain(tmp_path: Path, capsys: pytest.CaptureFixture[str], event: dict[str, object],
            *extra: str) -> tuple[int, str]:
    argv = ["route", "explain", str(write_event(tmp_path, **event)), "--dir", str(AGREEMENTS_DIR),
            "--participants", str(participants_file(tmp_path)), "--at", NOW.isoformat(), *extra]
    return run(argv, capsys)


def test_explain_prints_each_grant_and_refusal_with_its_clause(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """route explain shows CWCC granted and CCPCR refused under TH-KH, clause by clause."""
    event = {"event_type": "return_plan.proposed", "sender": "TH.MSDHS",
             "to": ["KH", "KH.CCPCR"]}
    code, out = explain(tmp_path, capsys, event, "--consent", "ngo_sharing")
    assert code == 0
    assert "DELIVER under TH-KH v2" in out and "unsigned" in out
    assert "grant  KH.CWCC: logistics, operational, reintegration" in out
    assert "refuse KH.CCPCR [recipient_not_permitted]" in out
    assert "TH-KH v2 §events.return_plan.proposed.recipients.KH[1]: KH.CWCC" in out
    assert "opens obligation repatriation_decision: KH must send repatriation.approved" in out


def test_explain_shows_a_reject_and_exits_1(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Without origin_notification consent, origin.notified is rejected consent_missing."""
    event = {"event_type": "origin.notified", "sender": "TH.MSDHS", "to": ["KH"]}
    code, out = explain(tmp_path, capsys, event)
    assert code == 1
    assert "REJECT consent_missing" in out and "TH-KH v2 §events.origin.notified.consent" in out


def test_explain_honours_the_witness_hold(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """--witness-hold makes repatriation.approved a witness_hold reject."""
    event = {"event_type": "repatriation.approved", "sender": "TH.MSDHS", "to": ["KH"]}
    code, out = explain(tmp_path, capsys, event, "--witness-hold")
    assert code == 1 and "REJECT witness_hold" in out


def test_explain_lists_the_viet_nam_verification_deadline(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A verification request to VN shows its 30-working-day obligation."""
    event = {"event_type": "nationality_verification.requested", "sender": "TH.MSDHS",
             "to": ["VN"], "event_id": "ev-1"}
    code, out = explain(tmp_path, capsys, event, "--consent", "origin_notification")
    assert code == 0
    assert "VN must send nationality_verification.responded (correlation_id=ev-1)" in out
    assert "30 working days" in out


def test_explain_rejects_an_event_file_without_required_fields(tmp_path: Path) -> None:
    """An event without a sender is a PolicyError naming the file."""
    with pytest.raises(policy.PolicyError, match="missing sender"):
        policy.header_from_event({"event_type": "x", "case_ref": "c", "to": []}, "e.json", NOW)


def test_sign_command_uses_the_keystore_and_the_result_loads(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`agreements sign --as` for both TH-KH signatories, from a real keystore, loads TH-KH."""
    keys, out = tmp_path / "keys", tmp_path / "state"
    created = datetime.now(UTC) - timedelta(hours=1)
    for pid in ("TH.MSDHS", "KH.MOSVY"):
        keystore.new_keys(keys, pid, created)
        code, printed = run(["agreements", "sign", "--as", pid, "--keystore", str(keys),
                             "--dir", str(AGREEMENTS_DIR), "--out", str(out)], capsys)
        assert code == 0 and "signed TH-KH v2 as " + pid in printed
    people = [p for p in keystore.read_participants(PARTICIPANTS_FILE)
              if p.id in ("TH.MSDHS", "KH.MOSVY")]
    now = datetime.now(UTC)
    directory = keystore.directory_from_keystore(keys, people, now, timedelta(days=1))
    loaded = load_agreements(*state_texts(out), directory, now)
    assert [a.id for a in loaded.agreements] == ["TH-KH"]


def test_every_participant_an_agreement_names_is_in_the_committed_directory() -> None:
    """Signatories, senders and recipients named by id all exist in participants.yaml."""
    known = {p.id for p in keystore.read_participants(PARTICIPANTS_FILE)}
    named: set[str] = set()
    for doc in committed():
        named |= set(doc.signatories)
        for rule in doc.events.values():
            named |= {r.participant for r in rule.recipients if r.participant}
            named |= {s for senders in rule.senders.values() for s in senders if "." in s}
    assert named - known == set()


def test_explain_works_with_the_committed_participants_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """route explain with its default --participants reads deploy/directory/participants.yaml."""
    event = write_event(tmp_path, event_type="legal_proceedings.status_changed",
                        sender="TH.RTP", to=["KH"], handling_code="H1")
    code, out = run(["route", "explain", str(event), "--dir", str(AGREEMENTS_DIR),
                     "--participants", str(PARTICIPANTS_FILE)], capsys)
    assert code == 0
    assert "grant  TH.MSDHS: legal, operational" in out
    assert "grant  KH.MOSVY: legal, operational" in out
