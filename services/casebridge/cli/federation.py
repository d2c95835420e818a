"""``casebridge federation up | down``: the command; the federation lives in ``casebridge.demo``."""

from __future__ import annotations

from typing import Any

from casebridge.demo import federated


def register(sub: Any) -> None:
    federated.register(sub)
