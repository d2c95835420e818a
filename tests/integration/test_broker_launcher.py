"""``casebridge broker start|status|stop`` as a user runs it, on its own ports and state folder."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from casebridge.localkafka import broker
from casebridge.runtime.settings import Settings
from tests.support import free_base_port

pytestmark = pytest.mark.kafka


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "casebridge.cli", "broker", *args],
                          capture_output=True, text=True, timeout=180, check=False)


def java_pids_under(state: Path) -> list[int]:
    """Pids of live Kafka JVMs whose command line points into ``state``."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"kafka.Kafka" in cmdline and str(state.resolve()).encode() in cmdline:
            found.append(int(proc.name))
    return found


def test_start_twice_then_stop_leaves_no_java_process(tmp_path: Path) -> None:
    """A second start reuses the running broker; stop leaves no Kafka JVM behind; a start with
    other options on that data fails in under 10 s naming ``broker reset``, which clears it."""
    state, port = tmp_path / "broker", str(free_base_port())
    first = cli("start", "--port", port, "--state-dir", str(state))
    try:
        assert first.returncode == 0, first.stderr
        assert first.stdout.strip() == f"127.0.0.1:{port}"
        second = cli("start", "--port", port, "--state-dir", str(state))
        assert second.returncode == 0 and "already running" in second.stderr
        status = cli("status", "--state-dir", str(state))
        assert status.returncode == 0 and "answering" in status.stdout
        assert len(java_pids_under(state)) == 1
    finally:
        stopped = cli("stop", "--state-dir", str(state))
    assert stopped.returncode == 0
    assert java_pids_under(state) == []
    assert cli("status", "--state-dir", str(state)).returncode == 1
    began = time.monotonic()  # the same data, now asked for SASL: refused at once, with the fix
    secured = cli("start", "--secure", "--port", port, "--state-dir", str(state))
    assert secured.returncode == 2 and time.monotonic() - began < 10
    assert "[broker_state_mismatch]" in secured.stderr and "casebridge broker reset" in secured.stderr
    assert cli("reset", "--state-dir", str(state)).returncode == 0 and not state.exists()


def test_status_of_a_broker_never_started_says_not_answering(tmp_path: Path) -> None:
    """Status on an empty state folder exits 1 and says nothing answers."""
    done = cli("status", "--state-dir", str(tmp_path))
    assert done.returncode == 1 and "not answering" in done.stdout


def test_a_broker_that_cannot_start_shows_its_log_tail(tmp_path: Path) -> None:
    """A node that dies on start is reported with ``broker_failed`` and the tail of its log."""
    settings = Settings.from_env()
    doomed = broker.BrokerSpec(state_dir=tmp_path, cache_dir=settings.kafka_cache, pom=settings.kafka_pom,
                               base_port=free_base_port(), start_timeout=60)
    data = doomed.node_dir(1) / "data"
    data.mkdir(parents=True)  # storage "formatted" for another node of another cluster
    (data / "meta.properties").write_text("version=1\ncluster.id=AAAAAAAAAAAAAAAAAAAAAA\nnode.id=99\n")
    with pytest.raises(broker.BrokerError) as caught:
        broker.start(doomed, lambda _: None)
    assert caught.value.code == "broker_failed"
    assert "exited during start; its log" in str(caught.value)
    assert "ERROR" in str(caught.value)
    assert java_pids_under(tmp_path) == []
