"""The launcher's pure parts: Java version parsing, node configuration, port checks."""

from __future__ import annotations

import base64
import socket
import time
import uuid
from pathlib import Path

import pytest

from casebridge.localkafka import broker


def spec(nodes: int = 1, base_port: int = 9092) -> broker.BrokerSpec:
    return broker.BrokerSpec(state_dir=Path("/tmp/x"), cache_dir=Path("/tmp/c"),
                             pom=Path("deploy/kafka/pom.xml"), nodes=nodes, base_port=base_port)


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_402"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ("no version here", None),
    ],
)
def test_java_major_reads_the_major_version(output: str, major: int | None) -> None:
    """``java -version`` output of old and new formats gives the major version."""
    assert broker.java_major(output) == major


def test_single_node_is_a_combined_kraft_node_on_loopback() -> None:
    """One node plays broker and controller on 127.0.0.1 with replication 1."""
    props = dict(line.split("=", 1) for line in broker.server_properties(spec(), 1).splitlines())
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"


def test_three_nodes_replicate_three_ways_with_two_in_sync() -> None:
    """A 3-node cluster votes among all three and keeps min.insync.replicas at 2."""
    props = dict(line.split("=", 1) for line in broker.server_properties(spec(3), 2).splitlines())
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093,2@127.0.0.1:9095,3@127.0.0.1:9097"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9094"
    assert props["default.replication.factor"] == "3"
    assert props["min.insync.replicas"] == "2"
    assert props["unclean.leader.election.enable"] == "false"


def test_a_taken_port_is_reported_with_its_fix() -> None:
    """Starting on a port another process holds fails with ``port_taken`` and names --port."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(broker.PortTaken, match="--port") as caught:
            broker.check_ports(spec(base_port=port))
    assert caught.value.code == "port_taken"


def test_missing_java_is_reported_with_its_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without java on PATH the launcher fails with ``java_missing`` and says what to install."""
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(broker.JavaMissing, match="JDK 17"):
        broker.check_java()


def test_missing_maven_is_reported_with_its_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With no cached jars and no mvn on PATH the launcher fails with ``maven_missing``."""
    monkeypatch.setenv("PATH", "/nonexistent")
    pom = tmp_path / "pom.xml"
    pom.write_text("<project/>")
    missing = broker.BrokerSpec(state_dir=tmp_path, cache_dir=tmp_path / "cache", pom=pom)
    with pytest.raises(broker.MavenMissing, match="Maven"):
        broker.resolve_jars(missing, lambda _: None)


def test_cluster_ids_never_start_with_a_dash(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A UUID whose base64 starts with ``-`` is drawn again, as Kafka does; the id is kept."""
    drawn = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(int=1 << 100)])
    monkeypatch.setattr(broker.uuid, "uuid4", lambda: next(drawn))
    local = broker.BrokerSpec(state_dir=tmp_path, cache_dir=tmp_path / "c", pom=Path("pom.xml"))
    first = broker.cluster_id(local)
    assert first == base64.urlsafe_b64encode((1 << 100).to_bytes(16, "big")).decode().rstrip("=")
    assert broker.cluster_id(local) == first


def test_base_ports_lie_below_the_ephemeral_range(tmp_path: Path) -> None:
    """A dead node's port must not be handed to a client as its source port meanwhile."""
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text("32768\t60999\n")
    assert broker.ephemeral_low(ranges) == 32768
    assert broker.ephemeral_low(tmp_path / "absent") == 32768
    low = broker.ephemeral_low()
    assert all(broker.free_base_port(nodes=3) + 5 < min(40000, low) for _ in range(50))


@pytest.mark.parametrize(
    "options", [["--secure"], ["--nodes", "3"], ["--secure", "--tls"], ["--port", "9192"]]
)
def test_a_start_with_other_options_than_the_data_was_made_for_fails_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str]
) -> None:
    """Data formatted for one plain node is refused in well under 10 s with broker_state_mismatch,
    naming ``casebridge broker reset``; after the reset the folder is gone."""
    from casebridge.cli import main

    (tmp_path / "node-1").mkdir()
    (tmp_path / "nodes").write_text("1 9092 0 0\n")
    started = time.monotonic()
    assert main(["broker", "start", "--state-dir", str(tmp_path), *options]) == 2
    assert time.monotonic() - started < 10
    err = capsys.readouterr().err
    assert "error [broker_state_mismatch]" in err and "`casebridge broker reset`" in err
    assert main(["broker", "reset", "--state-dir", str(tmp_path)]) == 0
    assert not tmp_path.exists()


def test_the_same_options_again_pass_the_layout_check(tmp_path: Path) -> None:
    """A state folder made with the options asked for (or an older two-field file) is accepted."""
    (tmp_path / "node-1").mkdir()
    (tmp_path / "nodes").write_text("1 9092\n")
    spec = broker.BrokerSpec(state_dir=tmp_path, cache_dir=tmp_path, pom=tmp_path / "pom.xml")
    broker.check_layout(spec)
    (tmp_path / "nodes").write_text("1 9092 1 0\n")
    broker.check_layout(broker.BrokerSpec(state_dir=tmp_path, cache_dir=tmp_path, pom=tmp_path / "pom.xml",
                                          secure=True))


def test_the_record_limit_is_the_one_the_broker_and_producers_enforce() -> None:
    """The launcher's message.max.bytes and aiokafka's default max_request_size are the limit
    the nodes check before queueing (core/limits.py), so nothing a node queued is refused for size."""
    import inspect

    from aiokafka import AIOKafkaProducer

    from casebridge.core import limits

    props = dict(line.split("=", 1) for line in broker.server_properties(spec(), 1).splitlines())
    assert int(props["message.max.bytes"]) == limits.KAFKA_MESSAGE_BYTES + 12
    default = inspect.signature(AIOKafkaProducer).parameters["max_request_size"].default
    assert default == limits.KAFKA_MESSAGE_BYTES > limits.MAX_RECORD_BYTES


def test_plain_start_on_secured_data_fails_at_once_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The other direction: data made with --secure, started without it, is broker_state_mismatch."""
    from casebridge.cli import main

    (tmp_path / "node-1").mkdir()
    (tmp_path / "nodes").write_text("1 9092 1 0\n")
    assert main(["broker", "start", "--state-dir", str(tmp_path)]) == 2
    assert "error [broker_state_mismatch]" in capsys.readouterr().err
