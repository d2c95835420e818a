"""The README's main command, `make demo` (= `casebridge demo`), run against the session broker."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import KafkaHandle

pytestmark = pytest.mark.kafka


def test_demo_runs_to_completion(kafka: KafkaHandle, tmp_path: os.PathLike[str]) -> None:
    """`casebridge demo` exits 0 and reports success on a real broker."""
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "CASEBRIDGE_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "casebridge.cli", "demo"], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "demo OK" in done.stdout
