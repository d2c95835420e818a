"""The node API as a real running node sees it: a bounded schemathesis run against
``deploy/openapi/node.yaml`` finds no server error and no response outside the spec, calls
without a client's token are refused, and the HTTP services stop promptly on SIGTERM.

A broker of its own (so the fuzzed events published to ``cb.out.TH.MSDHS`` reach no other
test's router) and one node process, started as the demo starts its nodes.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from casebridge.demo import localnet
from casebridge.localkafka import broker
from tests.support import KafkaHandle, launcher_broker

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
NODE = "TH.MSDHS"
FUZZ_SECONDS = 30  # schemathesis' own time budget (--max-time): the test takes about a minute with its broker


@pytest.fixture(scope="module")
def broker_handle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaHandle]:
    """A dedicated broker for this module."""
    yield from launcher_broker(tmp_path_factory.mktemp("fuzzbroker"))


@pytest.fixture(scope="module")
def broker_spec(broker_handle: KafkaHandle) -> broker.BrokerSpec:
    assert broker_handle.spec is not None
    return broker_handle.spec


@pytest.fixture(scope="module")
def net(broker_handle: KafkaHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[localnet.LocalNet]:
    """One running node on the module's broker, with a client ``localnet`` holding every scope."""
    settings = replace(broker_handle.settings, home=tmp_path_factory.mktemp("fuzzhome"))
    network = localnet.LocalNet(settings, localnet.prepare(settings))
    try:
        network.start_node(NODE)
        network.wait_healthy()
        yield network
    finally:
        network.stop()


def test_calls_without_a_current_token_are_refused(net: localnet.LocalNet) -> None:
    """The running node answers 401 unauthenticated to a call without a token or with a wrong one."""
    token = net.tokens.pop(NODE)
    try:
        assert net.call(NODE, "GET", "/inbox")[0] == 401
        net.tokens[NODE] = "cbt_not-a-client"
        status, body = net.call(NODE, "POST", "/events", {"event_type": "return_plan.proposed"})
        assert (status, body["code"]) == (401, "unauthenticated")
    finally:
        net.tokens[NODE] = token


def test_schemathesis_finds_no_server_error_and_no_response_outside_the_spec(
    net: localnet.LocalNet, tmp_path: Path
) -> None:
    """A time-bounded schemathesis run (coverage, fuzzing, stateful phases) against the spec on the
    running node passes every check but positive-data acceptance (the spec cannot say which
    payload fits which event type), and the node still answers afterwards."""
    done = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", str(ROOT / "deploy/openapi/node.yaml"),
         "--url", net.url(NODE, ""), "--header", f"Authorization: Bearer {net.tokens[NODE]}",
         "--max-time", str(FUZZ_SECONDS), "--workers", "1", "--seed", "13", "--no-color",
         "--checks", "all", "--exclude-checks", "positive_data_acceptance",
         "--request-timeout", "30", "--generation-database", "none", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=FUZZ_SECONDS + 60, check=False, cwd=tmp_path,
    )
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "schemathesis-node.txt").write_text(done.stdout + done.stderr)
    failures = done.stdout.partition("FAILURES")[2].partition("WARNINGS")[0]
    summary = failures[:6000] + "\n".join(done.stdout.splitlines()[-12:])
    assert done.returncode == 0, summary
    assert net.call(NODE, "GET", "/health")[0] == 200
    net.check_alive(NODE)


def test_every_service_stops_within_5_s_of_sigterm_with_the_broker_gone(
    net: localnet.LocalNet, broker_spec: broker.BrokerSpec
) -> None:
    """With the broker killed under them, SIGTERM ends the monitor, the node, the router and the
    deadline tracker in under 5 s each (this test runs last in the module: it takes the module's
    broker away)."""
    port = localnet.free_port()
    net.spawn("monitor", ["monitor", "run", "--port", str(port)], port)
    net.spawn("router", ["router", "run"])
    net.spawn("deadlines", ["deadlines", "run"])
    net.wait_healthy()
    for name in ("router", "deadlines"):  # up: joined their groups and restored their state
        log = net.services[name].log
        deadline = time.monotonic() + 60
        while f'"{name}_assigned"' not in log.read_text(errors="replace") and time.monotonic() < deadline:
            time.sleep(0.2)
    for node in broker_spec.node_ids:
        broker.kill_node(broker_spec, node)
    time.sleep(1)  # the services notice their broker is gone (not a timing assertion)
    for name in ("monitor", NODE, "router", "deadlines"):
        process = net.services[name].process
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        finally:
            elapsed = time.monotonic() - began
        assert elapsed < 5, f"{name} took {elapsed:.1f} s to stop after SIGTERM"
