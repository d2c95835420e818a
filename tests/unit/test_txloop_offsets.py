"""The transactional loop's watch on ``send_offsets_to_transaction`` (``runtime.txloop``): librdkafka
can block in it far past its timeout while the group coordinator is away (confluentinc/librdkafka
#5456), so the loop gives such a producer up for a new one of the same transactional id. The
producer here is a stand-in object for the one call; the loop on real brokers is tested in
tests/integration/test_router_transactions.py and the fault suite."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from casebridge.runtime import txloop
from casebridge.runtime.txloop import Loop

OFFSETS = [TopicPartition("cb.out.TH.MSDHS", 0, 5)]


class GroupConsumer:
    def consumer_group_metadata(self) -> object:
        return object()


class OneCallProducer:
    """Blocks in send_offsets_to_transaction until released, or raises ``error``."""

    def __init__(self, error: KafkaError | None = None) -> None:
        self.release, self.error = threading.Event(), error
        self.calls: list[str] = []

    def send_offsets_to_transaction(self, offsets: Any, metadata: Any, timeout: float) -> None:
        self.calls.append("send_offsets")
        if self.error is not None:
            raise KafkaException(self.error)
        self.release.wait(30)

    def commit_transaction(self, timeout: float) -> None:
        self.calls.append("commit")

    def abort_transaction(self, timeout: float) -> None:
        self.calls.append("abort")


def loop_with(producer: OneCallProducer, fresh: object, monkeypatch: pytest.MonkeyPatch) -> Loop:
    monkeypatch.setattr(txloop, "OFFSETS_GRACE", 0.2)
    loop = Loop.__new__(Loop)  # no clients: only commit() is driven
    loop.producer, loop.consumer, loop.offsets_timeout = producer, GroupConsumer(), 0.1  # type: ignore[assignment]
    loop.new_producer = lambda: fresh  # type: ignore[method-assign,assignment,return-value]
    return loop


def test_a_send_offsets_that_never_returns_gives_the_producer_up_and_commits_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Past its timeout and the grace, the batch is not committed and a new producer takes over."""
    stalled, fresh = OneCallProducer(), object()
    loop = loop_with(stalled, fresh, monkeypatch)
    began = time.monotonic()
    try:
        assert loop.commit(OFFSETS) is False
        assert time.monotonic() - began < 5
        assert loop.producer is fresh
        assert stalled.calls == ["send_offsets"]  # never committed
    finally:
        stalled.release.set()


def test_a_send_offsets_that_returns_in_time_lets_the_batch_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    producer = OneCallProducer()
    producer.release.set()
    loop = loop_with(producer, object(), monkeypatch)
    assert loop.commit(OFFSETS) is True
    assert loop.producer is producer and producer.calls == ["send_offsets", "commit"]


def test_an_error_of_send_offsets_reaches_the_loop_and_aborts_the_batch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    producer = OneCallProducer(KafkaError(KafkaError._TIMED_OUT))
    loop = loop_with(producer, object(), monkeypatch)
    assert loop.commit(OFFSETS) is False
    assert loop.producer is producer and producer.calls == ["send_offsets", "abort"]
