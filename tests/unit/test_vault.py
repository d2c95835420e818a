"""Encryption at rest and crypto-shredding (``core.vault``, ``node.vault``, ``node.protection``)."""

from __future__ import annotations

import base64
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from casebridge.cli import main
from casebridge.cli.protection import RETENTION
from casebridge.core import vault as core_vault
from casebridge.core.errors import Malformed
from casebridge.core.jsonform import to_json
from casebridge.node import protection, service, store
from casebridge.node import vault as node_vault
from casebridge.runtime.settings import Settings, read_key_file
from casebridge.runtime.world import World, bootstrap_network
from tests.support import canaried
from tests.unit.envelope_factories import example_payload

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SENDER, RECIPIENT = "TH.MSDHS", "KH.MOSVY"
CANARY = "CANARY-7d41c9e2-SOMCHAI"
MASTER = bytes(range(32))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """One run-time network (keys generated, agreements signed) shared by this module's tests."""
    return bootstrap_network(tmp_path_factory.mktemp("network"), NOW - timedelta(hours=1))


def received_case(world: World, tmp_path: Path, case_ref: str = "case-canary") -> tuple[
        sqlite3.Connection, node_vault.Vault, str]:
    """A recipient's store and vault holding one event of ``case_ref`` full of canaries."""
    sender = store.connect(tmp_path / SENDER / "node.sqlite")
    doc = {"event_type": "return_plan.proposed", "case_ref": case_ref, "to": ["KH"],
           "payload": canaried(to_json(example_payload("return_plan.proposed")), CANARY)}
    sent = service.submit(world, world.identity(SENDER), sender, doc, NOW)
    row = store.outbox_row(sender, sent.event_id)
    assert row is not None and row.envelope is not None
    folder = tmp_path / RECIPIENT
    conn = node_vault.prepare(store.connect(folder / "node.sqlite"))
    v = node_vault.open_vault(folder, MASTER)
    got = service.receive(world, world.identity(RECIPIENT), conn, row.envelope, NOW, v)
    assert got.outcome == "stored"
    return conn, v, sent.event_id


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_a_wrapped_key_opens_only_for_its_own_case_and_category() -> None:
    """A data key wrapped for one case cannot be unwrapped as another case's (it cannot be moved)."""
    key = core_vault.new_key()
    wrapped = core_vault.wrap_key(MASTER, "case-1", "identity", key)
    assert core_vault.unwrap_key(MASTER, "case-1", "identity", wrapped) == key
    with pytest.raises(core_vault.VaultError):
        core_vault.unwrap_key(MASTER, "case-2", "identity", wrapped)
    with pytest.raises(core_vault.VaultError):
        core_vault.unwrap_key(bytes(32), "case-1", "identity", wrapped)


@pytest.mark.parametrize(("text", "ok"), [
    (MASTER.hex(), True), (base64.b64encode(MASTER).decode(), True),
    ("c2hvcnQ=", False), ("not a key!", False),
])
def test_the_master_key_is_32_bytes_of_hex_or_base64(text: str, ok: bool) -> None:
    """A master key parses from 64 hex digits or base64 of 32 bytes; anything else is refused."""
    if ok:
        assert core_vault.parse_master_key(text) == MASTER
    else:
        with pytest.raises(core_vault.VaultError):
            core_vault.parse_master_key(text)


def test_a_master_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    """A key file with mode 0644 is refused; with 0600 it is read (and never shown in Settings)."""
    path = tmp_path / "master.key"
    path.write_text(MASTER.hex())
    path.chmod(0o644)
    with pytest.raises(core_vault.VaultError, match="owner only"):
        read_key_file(path)
    path.chmod(0o600)
    settings = Settings.from_env({"CASEBRIDGE_MASTER_KEY_FILE": str(path)})
    assert settings.master_key == MASTER and MASTER.hex() not in repr(settings)


def test_a_node_generates_a_0600_master_key_when_none_is_configured(tmp_path: Path) -> None:
    """With no configured key a node makes one, owner-readable only, and reads the same one again."""
    first = node_vault.master_key(b"", tmp_path)
    assert (tmp_path / "master.key").stat().st_mode & 0o777 == 0o600
    assert node_vault.master_key(b"", tmp_path) == first and len(first) == 32


def test_what_a_node_decrypted_is_stored_encrypted_and_read_back_in_clear(
        world: World, tmp_path: Path) -> None:
    """The canaries are in neither SQLite file nor its WAL, yet a read returns them with the handling."""
    conn, v, event_id = received_case(world, tmp_path)
    assert all(CANARY.encode() not in data for data in files_of(tmp_path / RECIPIENT).values())
    read = protection.read_record(v, conn, event_id)
    assert read.outcome == "found" and CANARY in str(read.body["payload"])
    assert read.body["handling"]["code"] == "H2"


def test_a_shredded_case_is_gone_from_both_files_and_reads_as_gone(world: World, tmp_path: Path) -> None:
    """After shredding, the wrapped keys and ciphertexts are in no file, and a read is metadata only."""
    conn, v, event_id = received_case(world, tmp_path)
    wrapped = [bytes(r[0]) for r in v.keys.execute("SELECT wrapped FROM data_keys")]
    sealed = store.inbox_record(conn, event_id)
    assert sealed is not None and wrapped
    blobs = [text.encode() for text in sealed["sealed"].values()]
    before = b"".join(files_of(tmp_path / RECIPIENT).values())
    assert all(b in before for b in wrapped + blobs)  # the search can find what it looks for
    result = node_vault.shred(v, conn, "case-canary", "data_subject_request", NOW)
    assert (result.records, result.keys) == (1, len(wrapped))
    for name, data in files_of(tmp_path / RECIPIENT).items():
        assert not [b for b in wrapped + blobs if b in data], name
    read = protection.read_record(v, conn, event_id)
    assert read.outcome == "shredded" and "payload" not in read.body
    assert read.body["shredded"]["reason"] == "data_subject_request"
    assert read.body["event_type"] == "return_plan.proposed"


def test_shredding_queues_a_metadata_only_notice_to_the_secretariat(world: World, tmp_path: Path) -> None:
    """``shred_case`` queues ``case.shredded`` to REG.SECRETARIAT with counts and the reason code."""
    conn, v, _ = received_case(world, tmp_path)
    _, notice = protection.shred_case(world, world.identity(RECIPIENT), conn, v, "case-canary",
                                      "court_order", NOW)
    assert notice.status == "queued" and notice.recipients == ("REG.SECRETARIAT",)


def test_a_shred_reason_must_be_a_code_not_free_text(world: World, tmp_path: Path) -> None:
    """A free-text reason (which could name someone) is refused before anything is destroyed."""
    conn, v, event_id = received_case(world, tmp_path)
    with pytest.raises(Malformed):
        node_vault.shred(v, conn, "case-canary", "asked by Somchai", NOW)
    assert protection.read_record(v, conn, event_id).outcome == "found"


def test_a_late_event_of_a_shredded_case_brings_no_content_back(world: World, tmp_path: Path) -> None:
    """An event of a case that was already shredded is stored as metadata only."""
    conn, v, _ = received_case(world, tmp_path)
    node_vault.shred(v, conn, "case-canary", "entered_in_error", NOW)
    record = {"event_id": "e-late", "case_ref": "case-canary", "payload": {"operational": {"n": 1}}}
    assert node_vault.protect(v, conn, record)["sealed"] == {}


def test_an_expired_retention_class_removes_only_its_category(world: World, tmp_path: Path) -> None:
    """Destroying one category's key leaves the others readable and names the expired one."""
    conn, v, event_id = received_case(world, tmp_path)
    categories = sorted(protection.read_record(v, conn, event_id).body["payload"])
    node_vault.expire(v, "case-canary", frozenset({categories[0]}))
    body = protection.read_record(v, conn, event_id).body
    assert body["expired"] == [categories[0]] and sorted(body["payload"]) == categories[1:]


def test_retention_classes_say_which_categories_are_due() -> None:
    """A bilateral class overrides the general one; nothing is due before the case is closed."""
    classes = core_vault.parse_retention({"retention": {"*": {"identity": 30, "health": 30},
                                                        "TH-KH": {"identity": 90}}})
    closed = NOW - timedelta(days=40)
    assert core_vault.expired(classes, "TH-KH", closed, NOW) == {"health"}
    assert core_vault.expired(classes, "TH-LA", closed, NOW) == {"identity", "health"}
    assert core_vault.expired(classes, "TH-KH", None, NOW) == frozenset()


def test_retention_destroys_the_due_categories_of_closed_cases_only(world: World, tmp_path: Path) -> None:
    """A case closed 40 days ago loses the category kept 30 days; an open case keeps everything."""
    conn, v, event_id = received_case(world, tmp_path)
    closed = {"event_id": "e-closed", "event_type": "case.closed", "sender": SENDER,
              "case_ref": "case-canary", "created_at": (NOW - timedelta(days=40)).isoformat(),
              "agreement_id": "TH-KH"}
    classes = core_vault.parse_retention({"retention": {"*": {"operational": 30, "logistics": 60}}})
    assert protection.apply_retention(v, conn, classes, NOW) == {}
    store.store_inbound(conn, closed, NOW)
    assert protection.apply_retention(v, conn, classes, NOW) == {"case-canary": ["operational"]}
    assert protection.read_record(v, conn, event_id).body["expired"] == ["operational"]


def cli_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **record: Any) -> tuple[
        sqlite3.Connection, node_vault.Vault]:
    """A node folder under ``$CASEBRIDGE_HOME`` (its generated master key) with one canary record."""
    monkeypatch.setenv("CASEBRIDGE_HOME", str(tmp_path))
    monkeypatch.delenv("CASEBRIDGE_MASTER_KEY", raising=False)
    monkeypatch.delenv("CASEBRIDGE_MASTER_KEY_FILE", raising=False)
    folder = tmp_path / "nodes" / RECIPIENT
    conn = store.connect(folder / "node.sqlite")
    v = protection.open_node_vault(Settings(), conn, folder)
    stored = {"event_id": "e1", "event_type": "return_plan.proposed", "sender": SENDER, "case_ref": "c",
              "created_at": NOW.isoformat(), "payload": {"logistics": {"n": CANARY}}, **record}
    store.store_inbound(conn, node_vault.protect(v, conn, stored), NOW)
    return conn, v


def test_the_cli_shreds_a_case_and_queues_its_notice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``casebridge node shred CASE --as P --reason R`` shreds the node's case and queues the notice."""
    bootstrap_network(tmp_path, datetime.now(UTC) - timedelta(minutes=5))
    conn, v = cli_node(tmp_path, monkeypatch, case_ref="case-cli")
    assert main(["node", "shred", "case-cli", "--as", RECIPIENT, "--reason", "court_order"]) == 0
    assert protection.read_record(v, conn, "e1").outcome == "shredded"
    assert [r.event_type for r in store.queued(conn)] == ["case.shredded"]


def test_the_shipped_retention_classes_parse() -> None:
    """``deploy/retention.yaml`` names data categories and whole days only."""
    classes = core_vault.parse_retention(yaml.safe_load(RETENTION.read_text()))
    assert {c.category for c in classes} >= {"identity", "health"}


def test_the_inbox_command_shows_stored_records_decrypted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``casebridge inbox --as P`` prints what the node stored encrypted, in clear, with its handling."""
    cli_node(tmp_path, monkeypatch, handling_code="H1")
    assert main(["inbox", "--as", RECIPIENT]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert CANARY in line and '"code": "H1"' in line
