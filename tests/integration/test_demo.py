"""The README's main command, `make demo` (= `casebridge demo`), as a user runs it: here with
``--keep``, then ``--stop``, as README shows."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from casebridge.demo.run import KEPT_FILE, is_casebridge

pytestmark = pytest.mark.kafka


def casebridge(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env["CASEBRIDGE_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "casebridge.cli", *args], env=env, capture_output=True,
                          text=True, timeout=600, check=False)


def status_of(url: str, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_demo_runs_the_whole_case_keeps_the_network_and_stops_it(tmp_path: Path) -> None:
    """`casebridge demo --keep` meets every expectation, leaves nodes that refuse calls without a
    token, prints the stop command; `casebridge demo --stop` ends every process and the broker."""
    done = casebridge("demo", "--keep", home=tmp_path)
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
    assert re.search(r"Chains \(sender/partition\): (\d+) of \1 ok", out), "every chain verifies"
    assert f"Stop it with: CASEBRIDGE_HOME={tmp_path} casebridge demo --stop" in out
    pids = json.loads((tmp_path / KEPT_FILE).read_text())["services"]
    try:
        url, token_file = re.findall(r"TH\.MSDHS: (http://\S+)/  \(bearer token in (\S+)\)", out)[0]
        assert status_of(f"{url}/inbox") == 401
        assert status_of(f"{url}/inbox", Path(token_file).read_text().strip()) == 200
    finally:
        stopped = casebridge("demo", "--stop", home=tmp_path)
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped the demo network" in stopped.stdout
    assert [name for name, pid in pids.items() if is_casebridge(pid)] == []
    assert not list((tmp_path / "demo-broker").glob("node-*/broker.pid")), "the demo's broker is stopped"
    assert "no demo network left running" in casebridge("demo", "--stop", home=tmp_path).stdout


def java_processes_under(path: Path) -> list[int]:
    """Pids of the JVMs (brokers, MirrorMakers) whose command line names ``path``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "java" in cmdline and str(path) in cmdline:
            found.append(int(proc.name))
    return found


def test_the_federated_demo_runs_the_case_across_clusters_and_down_leaves_no_java(tmp_path: Path) -> None:
    """`casebridge demo --federated --keep` meets every expectation of the ordinary demo across
    the secretariat's, TH's and KH's own clusters, says what each holds and what each corridor
    carried; `casebridge federation down` then ends every process, no JVM left."""
    done = casebridge("demo", "--federated", "--keep", home=tmp_path)
    try:
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        out = done.stdout
        assert "demo --federated OK" in out
        assert out.count("REFUSED ") == 3 and "BREACHED REG.DEADLINES sla.breached" in out
        assert "SHREDDED" in out and "RESTRICTED KH.MOSVY's origin.notified" in out
        crossed = dict(re.findall(r"^  (TH -> KH|KH -> TH): (\d+ -> \d+)$", out, re.M))
        assert set(crossed) == {"TH -> KH", "KH -> TH"}
        for carried in crossed.values():  # every record written at the origin was mirrored
            written, mirrored = carried.split(" -> ")
            assert int(written) > 0 and written == mirrored
        assert re.search(r"Chains \(sender/partition\): (\d+) of \1 ok", out), "every chain verifies"
        assert java_processes_under(tmp_path)  # kept running
    finally:
        down = casebridge("federation", "down", home=tmp_path)
    assert down.returncode == 0, down.stderr[-2000:]
    assert java_processes_under(tmp_path) == []
