"""A 3-node KRaft cluster on loopback (replication 3, min.insync.replicas 2), secured, with a
CaseBridge network on it (router, deadline tracker, monitor, a sender and a recipient node).

Never skipped: when the cluster cannot be had, every fault test fails with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from casebridge.demo import localnet
from casebridge.runtime.settings import Settings
from tests.conftest import launcher_broker
from tests.faults.harness import NODES, Cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    source = launcher_broker(tmp_path_factory.mktemp("cluster"), secure=True, nodes=3)
    try:
        handle = next(source)
    except Exception as exc:  # say why, and fail: a fault test never skips
        pytest.fail(f"no 3-node Kafka cluster could be started for the fault tests: {exc}", pytrace=False)
    assert handle.spec is not None
    settings = replace(
        Settings.from_env(),
        bootstrap_servers=handle.bootstrap,
        home=tmp_path_factory.mktemp("faulthome"),
        sasl_username=handle.settings.sasl_username,
        sasl_password=handle.settings.sasl_password,
        replication=3,
    )
    try:
        net = localnet.start(settings, NODES)
        try:
            yield Cluster(handle.spec, settings, net)
        finally:
            net.stop()
    finally:
        for _ in source:  # stops the cluster
            pass
