"""Local state is private and keys stay in custody: stores 0600 in 0700 folders, a node's world
lends no other participant's private keys, record size bounds hold."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from casebridge.core import limits
from casebridge.node import app, store
from casebridge.runtime.world import KeyCustody, World, bootstrap_network

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """One run-time network shared by this module's tests."""
    return bootstrap_network(tmp_path_factory.mktemp("network"), NOW - timedelta(hours=1))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_node_store_is_0600_in_0700_folders_whatever_the_umask(tmp_path: Path) -> None:
    """open_store makes home, nodes/ and the node's folder 0700 and its SQLite files 0600."""
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    old = os.umask(0o022)
    try:
        conn = app.open_store(home, "KH.MOSVY")
        store.record_refusal(conn, "e-1", "case-1", "return_plan.proposed", "no_agreement", NOW)
        conn.close()
        app.open_store(home, "KH.MOSVY").close()
    finally:
        os.umask(old)
    db = app.node_db(home, "KH.MOSVY")
    assert [mode(p) for p in (home, home / "nodes", db.parent)] == [0o700] * 3
    assert {p.name: mode(p) for p in db.parent.iterdir()} == {
        p.name: 0o600 for p in db.parent.iterdir()}
    assert mode(db) == 0o600


def test_a_world_in_custody_of_one_participant_lends_no_other_key(world: World) -> None:
    """A node started --as TH.MSDHS can load its own signing keys and no other participant's."""
    mine = world.in_custody_of("TH.MSDHS")
    assert mine.identity("TH.MSDHS").participant == "TH.MSDHS"
    with pytest.raises(KeyCustody) as refused:
        mine.identity("KH.MOSVY")
    assert refused.value.code == "key_custody"


def test_bounded_header_fields_fit_in_the_record_overhead() -> None:
    """The clear-header fields at their bounds weigh less than the overhead kept for headers."""
    assert limits.header_fields_bound() * 2 < limits.RECORD_OVERHEAD_BYTES
    assert limits.MAX_RECORD_BYTES + limits.RECORD_OVERHEAD_BYTES == 1024 * 1024
    assert limits.record_fits(b"x" * (limits.MAX_RECORD_BYTES - 10), b"0123456789")
    assert not limits.record_fits(b"x" * limits.MAX_RECORD_BYTES, b"k")
