"""``casebridge keys new``, ``directory build|verify`` through the argument parser."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from casebridge.cli import envelope
from casebridge.core.errors import CaseBridgeError
from tests.unit.envelope_factories import ROOT

PARTICIPANTS = ROOT / "deploy" / "directory" / "participants.yaml"


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="casebridge")
    envelope.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def write_participants(path: Path) -> Path:
    path.write_text("participants:\n"
                    "  - {id: REG.SECRETARIAT, role: secretariat, name: Secretariat}\n"
                    "  - {id: TH.MSDHS, role: government, name: MSDHS}\n")
    return path


def test_keys_new_prints_key_ids_and_no_private_material(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """keys new reports the key ids, never prints a private key, and never overwrites keys."""
    assert run("keys", "new", "TH.MSDHS", "--keystore", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "TH.MSDHS: signing key" in out and "PRIVATE" not in out
    assert run("keys", "new", "TH.MSDHS", "--keystore", str(tmp_path)) == 1
    assert "already holds keys" in capsys.readouterr().err
    assert run("keys", "new", "TH.MSDHS", "--keystore", str(tmp_path), "--rotate") == 0


def test_directory_build_then_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A directory built from the keystore verifies against the secretariat's public.json."""
    keys, out = tmp_path / "keys", tmp_path / "directory.avro"
    for pid in ("REG.SECRETARIAT", "TH.MSDHS"):
        run("keys", "new", pid, "--keystore", str(keys))
    participants = write_participants(tmp_path / "participants.yaml")
    assert run("directory", "build", "--keystore", str(keys), "--participants",
               str(participants), "--out", str(out), "--valid-days", "2") == 0
    assert run("directory", "verify", str(out), "--keystore", str(keys)) == 0
    assert "ok: directory" in capsys.readouterr().out


def test_directory_build_revokes_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--revoke marks a key revoked in the signed directory."""
    keys, out = tmp_path / "keys", tmp_path / "directory.avro"
    run("keys", "new", "REG.SECRETARIAT", "--keystore", str(keys))
    run("keys", "new", "TH.MSDHS", "--keystore", str(keys))
    key_id = (keys / "TH.MSDHS" / "public.json").read_text().split('"signing_key_id": "')[1][:16]
    participants = write_participants(tmp_path / "participants.yaml")
    run("directory", "build", "--keystore", str(keys), "--participants", str(participants),
        "--out", str(out), "--revoke", key_id)
    capsys.readouterr()
    run("directory", "verify", str(out), "--keystore", str(keys))
    assert f"sign:{key_id} revoked" in capsys.readouterr().out


def test_directory_build_without_keys_names_the_missing_participant(tmp_path: Path) -> None:
    """Building with a participant that has no keys fails with a typed error naming it."""
    keys = tmp_path / "keys"
    run("keys", "new", "REG.SECRETARIAT", "--keystore", str(keys))
    with pytest.raises(CaseBridgeError, match=r"TH\.MSDHS"):
        run("directory", "build", "--keystore", str(keys), "--participants",
            str(write_participants(tmp_path / "p.yaml")), "--out", str(tmp_path / "d.avro"))


def test_directory_verify_with_a_foreign_anchor_fails(tmp_path: Path) -> None:
    """A directory does not verify against another secretariat key."""
    keys, other, out = tmp_path / "keys", tmp_path / "other", tmp_path / "d.avro"
    for pid in ("REG.SECRETARIAT", "TH.MSDHS"):
        run("keys", "new", pid, "--keystore", str(keys))
    run("keys", "new", "REG.SECRETARIAT", "--keystore", str(other))
    run("directory", "build", "--keystore", str(keys), "--participants",
        str(write_participants(tmp_path / "p.yaml")), "--out", str(out))
    with pytest.raises(CaseBridgeError) as err:
        run("directory", "verify", str(out), "--keystore", str(other))
    assert err.value.code == "unknown_key"
