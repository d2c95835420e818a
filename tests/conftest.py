"""The session's real Kafka broker: never an in-memory fake, never a silent skip.

Order of preference: ``KAFKA_BOOTSTRAP_SERVERS`` if set; else testcontainers when a Docker engine
answers; else the project's own launcher (``casebridge broker start``) on free loopback ports. If
none can be had, every test that asked for Kafka fails with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support import (
    KafkaHandle,
    container_broker,
    docker_engine_answers,
    launcher_broker,
)


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaHandle]:
    """A real Kafka broker for the whole session (fails the tests, never skips, when unavailable);
    the launcher's is secured (SASL/SCRAM, deny by default) and the tests use its admin."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield KafkaHandle(os.environ["KAFKA_BOOTSTRAP_SERVERS"], "env")
        return
    try:
        source = container_broker() if docker_engine_answers() else None
        source = source or launcher_broker(tmp_path_factory.mktemp("kafka"), secure=True)
        handle = next(source)
    except Exception as exc:  # any reason at all: say it, and fail
        pytest.fail(f"no Kafka broker could be had for the integration tests: {exc}", pytrace=False)
    yield handle
    for _ in source:
        pass
