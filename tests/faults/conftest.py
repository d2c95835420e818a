"""A 3-node KRaft cluster on loopback (replication 3, min.insync.replicas 2), secured, with a
CaseBridge network on it (router, deadline tracker, monitor, a sender and a recipient node).

Never skipped: when the cluster cannot be had, every fault test fails with the reason.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import replace

import pytest

from casebridge.runtime import broker, localnet
from casebridge.runtime.settings import Settings
from tests.faults.harness import NODES, Cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = Settings.from_env()
    spec = broker.BrokerSpec(
        state_dir=tmp_path_factory.mktemp("cluster"),
        cache_dir=base.kafka_cache,
        pom=base.kafka_pom,
        nodes=3,
        base_port=broker.free_base_port(nodes=3),
        secure=True,
    )
    try:
        bootstrap = broker.start(spec, lambda msg: print(f"[kafka] {msg}", file=sys.stderr))
    except Exception as exc:  # say why, and fail: a fault test never skips
        pytest.fail(f"no 3-node Kafka cluster could be started for the fault tests: {exc}", pytrace=False)
    settings = replace(
        base,
        bootstrap_servers=bootstrap,
        home=tmp_path_factory.mktemp("faulthome"),
        sasl_username=broker.ADMIN,
        sasl_password=broker.admin_password(spec),
        replication=3,
        stall_seconds=30.0,
    )
    try:
        net = localnet.start(settings, NODES)
    except BaseException:
        broker.stop(spec, lambda msg: None)
        raise
    try:
        yield Cluster(spec, settings, net)
    finally:
        net.stop()
        broker.stop(spec, lambda msg: None)
