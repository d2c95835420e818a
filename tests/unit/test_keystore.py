"""The on-disk keystore and the trust bootstrap."""

from __future__ import annotations

import json
import stat
from datetime import timedelta
from pathlib import Path

import pytest

from casebridge.core.directory import verify_directory
from casebridge.core.errors import UnknownKey
from casebridge.core.keys import key_id, signing_public
from casebridge.runtime import keystore
from tests.unit.envelope_factories import NOW, ROOT, SCHEMAS

PARTICIPANTS = ROOT / "deploy" / "directory" / "participants.yaml"


def test_new_keys_writes_private_keys_0600_and_public_json(tmp_path: Path) -> None:
    """keys new: two PKCS#8 PEM files readable by the owner only, and public.json."""
    public = keystore.new_keys(tmp_path, "TH.MSDHS", NOW)
    home = tmp_path / "TH.MSDHS"
    for name in ("signing.key", "encryption.key"):
        assert stat.S_IMODE((home / name).stat().st_mode) == 0o600
        assert (home / name).read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    doc = json.loads((home / "public.json").read_text())
    assert set(doc) == {"participant", "signing_key_id", "encryption_key_id",
                        "signing_public_b64", "encryption_public_b64", "created_at"}
    assert doc["signing_key_id"] == key_id(public.signing_public) == public.signing_key_id


def test_load_identity_matches_the_public_file(tmp_path: Path) -> None:
    """load_identity returns the keys whose ids public.json lists."""
    public = keystore.new_keys(tmp_path, "KH.MOSVY", NOW)
    identity = keystore.load_identity(tmp_path, "KH.MOSVY")
    assert identity.signing_key_id == public.signing_key_id
    assert identity.encryption_key_id == public.encryption_key_id
    assert signing_public(identity) == public.signing_public


def test_new_keys_refuses_to_overwrite_and_rotation_retires(tmp_path: Path) -> None:
    """Existing keys are kept unless rotating; rotation keeps the old public keys, stamped."""
    first = keystore.new_keys(tmp_path, "LA.MOLSW", NOW)
    with pytest.raises(FileExistsError):
        keystore.new_keys(tmp_path, "LA.MOLSW", NOW)
    second = keystore.new_keys(tmp_path, "LA.MOLSW", NOW + timedelta(days=1), rotate=True)
    old, current = keystore.load_public(tmp_path, "LA.MOLSW")
    assert old.signing_key_id == first.signing_key_id
    assert old.retired_at == NOW + timedelta(days=1)
    assert current == second


def test_load_identity_of_unknown_participant_is_unknown_key(tmp_path: Path) -> None:
    """No key files for a participant raises UnknownKey."""
    with pytest.raises(UnknownKey):
        keystore.load_identity(tmp_path, "VN.MOLISA")


def test_bootstrap_trust_signs_a_directory_of_every_participant(tmp_path: Path) -> None:
    """bootstrap_trust makes keys for all participants and a directory the anchor verifies."""
    trust = keystore.bootstrap_trust(tmp_path, PARTICIPANTS, NOW, timedelta(days=2), SCHEMAS)
    directory = verify_directory(SCHEMAS, trust.directory_file.read_bytes(), trust.anchor, NOW)
    assert directory == trust.directory
    assert len(directory.participants) == 19
    assert all(len(p.keys) == 2 for p in directory.participants.values())
    again = keystore.bootstrap_trust(tmp_path, PARTICIPANTS, NOW, timedelta(days=2), SCHEMAS)
    assert again.anchor == trust.anchor  # existing keys are kept
