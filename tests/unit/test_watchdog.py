"""The stall guard's decision (its Kafka reads are exercised by tests/faults)."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition

from casebridge.runtime import watchdog
from casebridge.runtime.settings import Settings


def app(assigned: list[str]) -> Any:
    consumer = SimpleNamespace(assignment=lambda: {TopicPartition(t, 0) for t in assigned})
    return SimpleNamespace(rebalancing=False, in_recovery=False, consumer=consumer,
                           conf=SimpleNamespace(id="casebridge-router"))


def run_guard(monkeypatch: pytest.MonkeyPatch, waiting: dict[str, int], counts: list[int],
              on_purpose: bool = False) -> list[int]:
    """Run the guard with a patience of 0.3 s over a handled counter that follows ``counts``."""
    async def behind(settings: Settings, group: str, tps: list[TopicPartition]) -> dict[str, int]:
        return waiting

    monkeypatch.setattr(watchdog, "behind", behind)
    exits: list[int] = []
    handled = iter(counts)
    last = [0]

    def count() -> int:
        last[0] = next(handled, last[0])
        return last[0]

    async def main() -> None:
        task = watchdog.guard(app(["cb.out.TH.MSDHS", "casebridge-router-seen-changelog"]), Settings(),
                              count, lambda: on_purpose, "cb.out.", 0.3, exits.append)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(task, 2.0)

    asyncio.run(main())
    return exits


def test_records_waiting_and_nothing_handled_exits_for_a_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_guard(monkeypatch, {"cb.out.TH.MSDHS/0": 228}, [5]) == [watchdog.STALLED_EXIT]


def test_nothing_waiting_is_not_a_stall(monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_guard(monkeypatch, {}, [5]) == []


def test_progress_is_not_a_stall(monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_guard(monkeypatch, {"cb.out.TH.MSDHS/0": 228}, list(range(100))) == []


def test_waiting_on_purpose_is_not_a_stall(monkeypatch: pytest.MonkeyPatch) -> None:
    """A router that waits for a current directory (fail closed) is not restarted."""
    assert run_guard(monkeypatch, {"cb.out.TH.MSDHS/0": 228}, [5], on_purpose=True) == []

