"""The node API as a real running node sees it: a bounded schemathesis run against
``deploy/openapi/node.yaml`` finds no server error and no response outside the spec, and calls
without a client's token are refused.

A broker of its own (so the fuzzed events published to ``cb.out.TH.MSDHS`` reach no other
test's router) and one node process, started as the demo starts its nodes.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from casebridge.demo import localnet
from tests.conftest import launcher_broker

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[2]
NODE = "TH.MSDHS"
FUZZ_SECONDS = 30  # schemathesis' own time budget (--max-time): the test takes about a minute with its broker


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[localnet.LocalNet]:
    """A dedicated broker and one running node with a client ``localnet`` holding every scope."""
    source = launcher_broker(tmp_path_factory.mktemp("fuzzbroker"))
    handle = next(source)
    settings = replace(handle.settings, home=tmp_path_factory.mktemp("fuzzhome"))
    network = localnet.LocalNet(settings, localnet.prepare(settings))
    try:
        network.start_node(NODE)
        network.wait_healthy()
        yield network
    finally:
        network.stop()
        for _ in source:
            pass


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
         "--generation-database", "none", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=FUZZ_SECONDS + 60, check=False, cwd=tmp_path,
    )
    failures = done.stdout.partition("FAILURES")[2].partition("WARNINGS")[0]
    summary = failures[:6000] + "\n".join(done.stdout.splitlines()[-12:])
    assert done.returncode == 0, summary
    assert net.call(NODE, "GET", "/health")[0] == 200
    net.check_alive(NODE)
