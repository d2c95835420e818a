"""Local state only its owner can read: the home folder 0700, stores and secrets 0600.

A node's SQLite file holds the recipient's decrypted inbox; nothing under ``CASEBRIDGE_HOME``
is for other local users.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def private_dir(path: Path, root: Path | None = None) -> Path:
    """Create ``path`` (and its parents from ``root`` down) as 0700, tightening existing ones."""
    root = root or path
    chain = [path, *[p for p in path.parents if p == root or root in p.parents]]
    for folder in reversed(chain):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty as 0600 if it is missing; tighten it to 0600 if it exists.

    An existing file is never opened: closing any descriptor of a file drops every POSIX lock
    this process holds on it, and SQLite's locks on a store, its WAL and its ``-shm`` index are
    such locks (opening and closing ``node.sqlite-shm`` beside a live connection corrupted the
    WAL index: SQLITE_PROTOCOL, "locking protocol", in the fault suite)."""
    if not path.exists():
        with contextlib.suppress(FileExistsError):  # made meanwhile by someone else: only tighten it
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    os.chmod(path, 0o600)
    return path
