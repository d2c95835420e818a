"""Factory helpers shared by the test suites (plain functions, no fixtures-of-fixtures)."""

from __future__ import annotations

import uuid
from typing import Any


def fresh_name(kind: str) -> str:
    """A topic or consumer-group name no other test uses (dots only, as our topic names)."""
    return f"test.{kind}.{uuid.uuid4().hex[:12]}"


def canaried(value: Any, canary: str, placeholder: str = "x") -> Any:
    """A JSON value with every ``placeholder`` string replaced by ``canary`` (for leak searches)."""
    if isinstance(value, dict):
        return {k: canaried(v, canary, placeholder) for k, v in value.items()}
    if isinstance(value, list):
        return [canaried(v, canary, placeholder) for v in value]
    return canary if value == placeholder else value
