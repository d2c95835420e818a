"""Private local files (``casebridge.runtime.private``) keep SQLite's locks intact."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

from casebridge.runtime.private import private_file

WRITE_IN_ANOTHER_PROCESS = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)
try:
    conn.execute("BEGIN IMMEDIATE")
    print("got the write lock")
except sqlite3.OperationalError as exc:
    print(exc)
"""


def test_an_existing_file_is_tightened_without_being_opened(tmp_path: Path) -> None:
    """A file that exists is made 0600 and not opened (closing a descriptor drops POSIX locks)."""
    path = tmp_path / "node.sqlite-shm"
    path.write_bytes(b"x" * 10)
    os.chmod(path, 0o644)
    real_open, opened = os.open, []
    try:
        os.open = lambda *a, **k: opened.append(a) or real_open(*a, **k)  # type: ignore[assignment]
        private_file(path)
    finally:
        os.open = real_open  # type: ignore[assignment]
    assert opened == [] and stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_bytes() == b"x" * 10


def test_a_live_stores_write_lock_survives_making_its_files_private(tmp_path: Path) -> None:
    """While one connection holds the write lock of a WAL store, making the store, its WAL and its
    index private in the same process leaves the lock held: another process still cannot write."""
    path = tmp_path / "node.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO t VALUES (1)")
    for name in ("node.sqlite", "node.sqlite-wal", "node.sqlite-shm"):
        private_file(tmp_path / name)
    other = subprocess.run([sys.executable, "-c", WRITE_IN_ANOTHER_PROCESS, str(path)],
                           capture_output=True, text=True, timeout=30, check=True)
    conn.execute("ROLLBACK")
    assert "locked" in other.stdout, other.stdout
