"""A node's key file and its shredding: what it decrypted is stored encrypted, per case.

The wrapped data keys live in ``keys.sqlite`` beside ``node.sqlite`` (never in it); the node master
key that wraps them comes from ``Settings.master_key`` (``CASEBRIDGE_MASTER_KEY`` or a 0600
``CASEBRIDGE_MASTER_KEY_FILE``), else, for a local network, from a generated 0600 ``master.key``
in the node's own folder. ``protect`` turns an inbound record's payload into one ciphertext per
data category; ``reveal`` turns it back, marking what was shredded. ``shred`` destroys a case's
keys, replaces its stored records by their metadata, and scrubs both files (``secure_delete``,
WAL checkpoint, VACUUM) so that the old pages are overwritten, not merely freed.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from casebridge.core import vault
from casebridge.core.errors import Malformed
from casebridge.node import store
from casebridge.runtime.settings import read_key_file

KEY_SCHEMA = """
CREATE TABLE IF NOT EXISTS data_keys (
    case_ref TEXT NOT NULL, category TEXT NOT NULL, wrapped BLOB NOT NULL,
    PRIMARY KEY (case_ref, category));
"""
SHRED_SCHEMA = """
CREATE TABLE IF NOT EXISTS shredded (
    case_ref TEXT PRIMARY KEY, reason TEXT NOT NULL, at TEXT NOT NULL, records INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS restricted (
    event_id TEXT PRIMARY KEY, case_ref TEXT NOT NULL, scopes TEXT NOT NULL,
    notice_event_id TEXT NOT NULL, at TEXT NOT NULL);
"""
METADATA = ("event_id", "event_type", "sender", "case_ref", "correlation_id", "created_at",
            "handling_code", "handling_conditions", "forward_of", "agreement_id", "categories")
"""What a stored record keeps in clear (no personal data): the rest is encrypted."""


@dataclass(frozen=True)
class Vault:
    """A node's key file and master key (never printed)."""

    keys: sqlite3.Connection
    master: bytes = field(repr=False)


@dataclass(frozen=True)
class ShredResult:
    case_ref: str
    reason: str
    records: int  # stored records whose content was destroyed
    keys: int  # data keys destroyed
    at: datetime


def master_key(configured: bytes, folder: Path) -> bytes:
    """The configured master key, else the node folder's generated 0600 ``master.key``."""
    if configured:
        return configured
    path = folder / "master.key"
    folder.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(base64.b64encode(vault.new_key()).decode())
    return read_key_file(path)


def prepare(conn: sqlite3.Connection) -> sqlite3.Connection:
    """Make a node store ready for shredding: deleted content is overwritten with zeros from now
    on (``PRAGMA secure_delete``), and the tables of shredded cases and restricted records exist."""
    conn.execute("PRAGMA secure_delete=ON")
    conn.executescript(SHRED_SCHEMA)
    return conn


def open_vault(folder: Path, master: bytes) -> Vault:
    folder.mkdir(parents=True, exist_ok=True)
    keys = sqlite3.connect(folder / "keys.sqlite", isolation_level=None, check_same_thread=False)
    keys.execute("PRAGMA journal_mode=WAL")
    keys.execute("PRAGMA secure_delete=ON")
    keys.executescript(KEY_SCHEMA)
    return Vault(keys, master)


def data_key(v: Vault, case_ref: str, category: str, create: bool) -> bytes | None:
    row = v.keys.execute("SELECT wrapped FROM data_keys WHERE case_ref = ? AND category = ?",
                         (case_ref, category)).fetchone()
    if row is not None:
        return vault.unwrap_key(v.master, case_ref, category, bytes(row[0]))
    if not create:
        return None
    key = vault.new_key()
    v.keys.execute("INSERT INTO data_keys VALUES (?, ?, ?)",
                   (case_ref, category, vault.wrap_key(v.master, case_ref, category, key)))
    return key


def protect(v: Vault, conn: sqlite3.Connection, record: Mapping[str, Any]) -> dict[str, Any]:
    """The record with its payload replaced by one ciphertext per data category (its metadata
    only, once the case was shredded: a late event of the case brings no content back)."""
    case_ref, event_id = str(record["case_ref"]), str(record["event_id"])
    sealed: dict[str, str] = {}
    if shredded_case(conn, case_ref) is not None:
        return {**{k: record.get(k) for k in METADATA}, "sealed": sealed}
    for category, section in (record.get("payload") or {}).items():
        key = data_key(v, case_ref, category, create=True)
        assert key is not None
        blob = vault.encrypt(key, case_ref, category, event_id, json.dumps(section).encode())
        sealed[category] = base64.b64encode(blob).decode()
    return {**{k: record.get(k) for k in METADATA}, "sealed": sealed}


def reveal(v: Vault, conn: sqlite3.Connection, record: Mapping[str, Any]) -> dict[str, Any]:
    """A stored record as the API shows it: payload decrypted; ``shredded`` when it was destroyed,
    ``expired`` naming the categories whose retention ran out. Records stored in clear pass."""
    case_ref, event_id = str(record["case_ref"]), str(record["event_id"])
    shred = shredded_case(conn, case_ref)
    out = {k: value for k, value in record.items() if k != "sealed"}
    if shred is not None:
        return {**out, "shredded": shred}
    if "sealed" not in record:
        return out
    payload, expired = {}, []
    for category, text in record["sealed"].items():
        key = data_key(v, case_ref, category, create=False)
        if key is None:
            expired.append(category)
            continue
        blob = base64.b64decode(text)
        payload[category] = json.loads(vault.decrypt(key, case_ref, category, event_id, blob))
    return {**out, "payload": payload, **({"expired": sorted(expired)} if expired else {})}


def shredded_case(conn: sqlite3.Connection, case_ref: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT reason, at, records FROM shredded WHERE case_ref = ?",
                       (case_ref,)).fetchone()
    return {"reason": row[0], "at": row[1], "records": row[2]} if row else None


def shred(v: Vault, conn: sqlite3.Connection, case_ref: str, reason: str, now: datetime) -> ShredResult:
    """Destroy a case's data keys and its stored content for good; keep its metadata only."""
    if reason not in vault.SHRED_REASONS:
        raise Malformed(f"reason must be one of {', '.join(vault.SHRED_REASONS)}")
    prepare(conn)
    with store.transaction(v.keys):
        keys = v.keys.execute("DELETE FROM data_keys WHERE case_ref = ?", (case_ref,)).rowcount
    with store.transaction(conn):
        records = _strip_case(conn, case_ref)
        conn.execute("INSERT OR REPLACE INTO shredded VALUES (?, ?, ?, ?)",
                     (case_ref, reason, now.isoformat(), records))
    for db in (v.keys, conn):
        scrub(db)
    return ShredResult(case_ref, reason, records, keys, now)


def expire(v: Vault, case_ref: str, categories: frozenset[str]) -> int:
    """Destroy one case's keys of ``categories`` (a retention class ran out); how many."""
    with store.transaction(v.keys):
        gone = sum(v.keys.execute("DELETE FROM data_keys WHERE case_ref = ? AND category = ?",
                                  (case_ref, c)).rowcount for c in sorted(categories))
    scrub(v.keys)
    return gone


def _strip_case(conn: sqlite3.Connection, case_ref: str) -> int:
    rows = conn.execute("SELECT event_id, record FROM inbox WHERE case_ref = ?", (case_ref,)).fetchall()
    for event_id, text in rows:
        kept = {k: value for k, value in json.loads(text).items() if k in METADATA}
        conn.execute("UPDATE inbox SET record = ? WHERE event_id = ?", (json.dumps(kept), event_id))
    return len(rows)


def scrub(conn: sqlite3.Connection) -> None:
    """Fold the WAL into the file, rebuild the file without free pages, empty the WAL."""
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("VACUUM")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
