"""Directory updates applied by running apps, and the router's records for unverifiable input."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from casebridge.core import avro, issued
from casebridge.core.directory import sign_directory
from casebridge.runtime.keystore import directory_from_keystore, read_participants
from casebridge.runtime.refresh import apply_directory
from casebridge.runtime.world import PARTICIPANTS, World, bootstrap_network

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """A trust world made at run time (keys, signed directory, signed agreements)."""
    return bootstrap_network(tmp_path_factory.mktemp("refresh"), NOW)


def newer(world: World, later: timedelta, **revoked: datetime) -> bytes:
    people = read_participants(PARTICIPANTS)
    directory = directory_from_keystore(world.keystore, people, NOW + later, timedelta(days=30), revoked)
    return sign_directory(world.schemas, directory, world.identity("REG.SECRETARIAT"))


def test_a_newer_signed_directory_replaces_the_one_in_use(world: World) -> None:
    """A directory that verifies and has a higher version is applied (here: with a revocation)."""
    key_id = world.identity("LA.MOLSW").signing_key_id
    updated = apply_directory(
        world, newer(world, timedelta(seconds=5), **{key_id: NOW}), NOW + timedelta(seconds=6)
    )
    assert updated.directory.version > world.directory.version
    keys = {k.key_id: k for k in updated.directory.participants["LA.MOLSW"].keys}
    assert keys[key_id].revoked_at is not None


def test_an_older_or_equal_directory_is_ignored(world: World) -> None:
    """Replaying the directory in use (or an older one) changes nothing."""
    same = sign_directory(world.schemas, world.directory, world.identity("REG.SECRETARIAT"))
    assert apply_directory(world, same, NOW + timedelta(seconds=1)) is world


def test_a_directory_not_signed_by_the_anchor_is_refused(world: World) -> None:
    """A directory signed by anyone but the secretariat's anchor key is refused; the old one stays."""
    people = read_participants(PARTICIPANTS)
    directory = directory_from_keystore(world.keystore, people, NOW + timedelta(seconds=5), timedelta(days=1))
    forged = sign_directory(world.schemas, directory, world.identity("TH.MSDHS"))
    assert apply_directory(world, forged, NOW + timedelta(seconds=6)) is world
    assert (
        apply_directory(
            replace(world, anchor=b"\0" * 32), newer(world, timedelta(seconds=5)), NOW + timedelta(seconds=6)
        ).directory
        is world.directory
    )


def test_an_unverifiable_record_still_gets_a_complete_audit_record(world: World, tmp_path: Path) -> None:
    """The audit record of bytes that could not be verified carries the code and no header fields."""
    data = issued.audit_record(
        world.schemas,
        None,
        None,
        ("cb.out.TH.MSDHS", 0, 7),
        "quarantined",
        "bad_signature",
        (),
        (),
        NOW,
    )
    decoded = avro.decode(world.schemas, data, issued.AUDIT)
    assert decoded["code"] == "bad_signature" and decoded["event_id"] is None and decoded["to"] == []
