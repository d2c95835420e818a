"""The README's main command, `make demo` (= `casebridge demo`), as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.kafka


def test_demo_runs_the_whole_case_to_completion(tmp_path: Path) -> None:
    """`casebridge demo` starts its own broker and network, and every expectation is met."""
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env["CASEBRIDGE_HOME"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "casebridge.cli", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    out = done.stdout
    assert "demo OK" in out
    assert "(SASL/SCRAM + ACLs)" in out  # secured by default: each service its own Kafka user
    assert out.count("REFUSED ") == 3  # the node's refusal, the router's, and the unpermitted H2 forward
    assert "DELIVERED KH.MOSVY forward -> TH.RTP" in out  # ... permitted by its provider
    assert "SHREDDED" in out and "canary in no file" in out
    assert "RESTRICTED KH.MOSVY's origin.notified" in out
    assert "EXPORTED casebridge stats export --as KH.MOSVY" in out
    assert "BREACHED REG.DEADLINES sla.breached" in out
    assert "Chains: 5 of 5 senders ok" in out
    assert not list((tmp_path / "demo-broker").glob("node-*/broker.pid")), "the demo's broker is stopped"
