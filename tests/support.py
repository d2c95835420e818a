"""Factory helpers shared by the test suites (plain functions, no fixtures-of-fixtures)."""

from __future__ import annotations

import uuid


def fresh_name(kind: str) -> str:
    """A topic or consumer-group name no other test uses (dots only, as our topic names)."""
    return f"test.{kind}.{uuid.uuid4().hex[:12]}"
