"""What a new user meets in the first hour: errors that name the README's command, and a missing
broker reported in one line (no broker runs here: the address is a closed loopback port)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from casebridge.cli import main
from casebridge.runtime import preflight
from casebridge.runtime.settings import Settings
from casebridge.runtime.world import TrustMissing, load_world


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_missing_trust_folder_names_casebridge_trust(tmp_path: Path) -> None:
    """Without $CASEBRIDGE_HOME/trust the error is trust_missing and names `casebridge trust`."""
    from datetime import UTC, datetime

    with pytest.raises(TrustMissing) as missing:
        load_world(tmp_path, datetime.now(UTC))
    assert missing.value.code == "trust_missing"
    assert "run `casebridge trust`" in missing.value.why and "keys new" not in missing.value.why


def test_an_unsecured_broker_that_does_not_answer_is_kafka_unreachable() -> None:
    """On an unsecured cluster too, a service's preflight stops with kafka_unreachable."""
    settings = Settings(bootstrap_servers=f"127.0.0.1:{closed_port()}")
    began = time.monotonic()
    with pytest.raises(preflight.KafkaUnreachable) as unreachable:
        preflight.check(settings, "TH.MSDHS", {"cb.in.TH.MSDHS": {"read"}}, timeout=2)
    assert time.monotonic() - began < 10
    assert "KAFKA_BOOTSTRAP_SERVERS" in unreachable.value.why


def test_topics_sync_without_a_broker_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`casebridge topics sync` against no broker exits 75 (EX_TEMPFAIL: try again) with one
    kafka_unreachable line."""
    monkeypatch.setenv("CASEBRIDGE_HOME", str(tmp_path))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{closed_port()}")
    assert main(["trust"]) == 0
    capsys.readouterr()
    assert main(["topics", "sync"]) == 75
    err = capsys.readouterr().err
    assert err.startswith("casebridge: error [kafka_unreachable]") and err.count("\n") == 1
