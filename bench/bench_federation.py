"""What the federation costs in latency (issue 15): end to end TH.MSDHS -> KH.MOSVY at a fixed
rate, first on one shared secured cluster (router, tracker, monitor, the two nodes), then across a
federation (the secretariat's, TH's and KH's own secured clusters, one MirrorMaker 2 each, a
router and tracker per cluster), in the same run on the same machine.

Latency: from the POST's start (client clock) to the recipient node's ``received_at``; an event
not stored within the drain limit counts as infinitely late. Results (ratios of the federation to
the single cluster) go to ``bench/results/federation-<time>.json``.

    .venv/bin/python bench/bench_federation.py [--rate 50] [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import netload  # noqa: E402
from casebridge.demo import federation, localnet  # noqa: E402
from casebridge.localkafka import broker  # noqa: E402
from casebridge.node.app import node_db  # noqa: E402
from casebridge.runtime.settings import Settings  # noqa: E402

SENDER, RECIPIENT = "TH.MSDHS", "KH.MOSVY"


def say(line: str) -> None:
    print(line, flush=True)


def warm_up(net: localnet.LocalNet, db: Path) -> None:
    """A few events through the whole path before the clock starts."""
    for n in range(5):
        status, body = net.call(SENDER, "POST", "/events", netload.plan_doc("CB-W", ["KH"], n))
        if status != 202:
            raise RuntimeError(f"warm-up event refused: {status} {body}")
    deadline = time.monotonic() + 180
    while netload.stored_count(db) < 5:
        if time.monotonic() > deadline:
            raise TimeoutError("warm-up events never reached the recipient")
        time.sleep(0.2)


def single(base: Settings, phase: netload.Phase, home: Path) -> dict[str, Any]:
    spec = broker.BrokerSpec(state_dir=home / "broker", cache_dir=base.kafka_cache, pom=base.kafka_pom,
                             base_port=broker.free_base_port(), secure=True)
    bootstrap = broker.start(spec, lambda m: say(f"[kafka] {m}"))
    try:
        settings = replace(base, bootstrap_servers=bootstrap, home=home / "net", sasl_username=broker.ADMIN,
                           sasl_password=broker.admin_password(spec), replication=1)
        net = localnet.start(settings, (SENDER, RECIPIENT))
        try:
            db = node_db(settings.home, RECIPIENT)
            warm_up(net, db)
            return netload.fixed_rate(net, db, phase, say, SENDER, RECIPIENT, 16)
        finally:
            net.stop()
    finally:
        broker.stop(spec, lambda m: None)


def federated(base: Settings, phase: netload.Phase, home: Path) -> dict[str, Any]:
    running = federation.up(replace(base, home=home / "federation"), (SENDER, RECIPIENT),
                            lambda m: say(f"[federation] {m}"))
    try:
        db = node_db(running.home, RECIPIENT)
        warm_up(running.net, db)
        return netload.fixed_rate(running.net, db, phase, say, SENDER, RECIPIENT, 16, stages=False)
    finally:
        running.stop(lambda m: None)


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=50.0, help="events/s offered (default 50)")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of load (default 30)")
    parser.add_argument("--drain", type=float, default=120.0, help="longest wait after the last POST")
    args = parser.parse_args()
    phase = netload.Phase(args.rate, args.seconds, args.drain)
    base = Settings.from_env()
    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(),
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "flow": f"{SENDER} -> {RECIPIENT} (return_plan.proposed), one event per POST",
    }
    with tempfile.TemporaryDirectory(prefix="cb-bench-fed-") as tmp:
        say(f"[1/2] one shared secured cluster, {args.rate:.0f} events/s for {args.seconds:.0f} s ...")
        results["single_cluster"] = single(base, phase, Path(tmp) / "single")
        say("[2/2] a federation of REG, TH and KH, same load ...")
        results["federation"] = federated(base, phase, Path(tmp) / "fed")
    one, fed = results["single_cluster"], results["federation"]
    results["federation_p50_to_single_p50"] = ratio(fed["p50_ms"], one["p50_ms"])
    results["federation_p99_to_single_p99"] = ratio(fed["p99_ms"], one["p99_ms"])
    both = fed["p50_ms"] is not None and one["p50_ms"] is not None
    results["federation_p50_extra_ms"] = round(fed["p50_ms"] - one["p50_ms"], 1) if both else None
    for label, run in (("single cluster", one), ("federation", fed)):
        say(f"{label:15} p50 {run['p50_ms']} ms, p99 {run['p99_ms']} ms, {run['received']}/{run['posted']} "
            f"stored, POST rate {run['achieved_post_rate_per_s']}/s")
    say(f"federation / single: p50 x{results['federation_p50_to_single_p50']}, "
        f"p99 x{results['federation_p99_to_single_p99']}")
    out = ROOT / "bench" / "results" / f"federation-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    say(f"results: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
