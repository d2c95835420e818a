"""``casebridge broker start|stop|status``: a real local Kafka (KRaft) from Maven Central jars."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from casebridge.localkafka import broker, tls
from casebridge.runtime.settings import Settings


def register(sub: Any) -> None:
    parser = sub.add_parser("broker", help="run a local Apache Kafka (KRaft) broker or cluster")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    start = actions.add_parser("start", help="start (idempotent) and print the bootstrap address")
    start.add_argument("--nodes", type=int, default=1, choices=(1, 3), help="1, or 3 for a cluster")
    start.add_argument("--port", type=int, default=9092, help="first client port (default 9092)")
    start.add_argument("--secure", action="store_true",
                       help="SASL/SCRAM-SHA-512 + ACL authorizer, deny by default (admin password in "
                            "STATE_DIR/admin.secret)")
    start.add_argument("--tls", action="store_true",
                       help="with --secure: SASL_SSL, certificates from a local CA made in "
                            "STATE_DIR/tls (clients trust STATE_DIR/tls/ca.pem: CASEBRIDGE_KAFKA_CA)")
    start.set_defaults(func=cmd_start)
    for name, func in (("stop", cmd_stop), ("status", cmd_status)):
        actions.add_parser(name, help=f"{name} the local broker").set_defaults(func=func)
    actions.add_parser("reset", help="stop the local broker and delete its data (to start it with "
                       "other options)").set_defaults(func=cmd_reset)
    for action in actions.choices.values():
        action.add_argument("--state-dir", type=Path, help="default: $CASEBRIDGE_HOME/broker")


def spec_from(args: argparse.Namespace, settings: Settings) -> broker.BrokerSpec:
    state = args.state_dir or settings.broker_dir
    nodes, port = getattr(args, "nodes", None), getattr(args, "port", None)
    tls = bool(getattr(args, "tls", False))
    secure = bool(getattr(args, "secure", False)) or tls
    if nodes is None and (state / "nodes").exists():
        saved = [int(x) for x in (state / "nodes").read_text().split()] + [0, 0]
        nodes, port, secure, tls = saved[0], saved[1], bool(saved[2]), bool(saved[3])
    return broker.BrokerSpec(state_dir=state, cache_dir=settings.kafka_cache, pom=settings.kafka_pom,
                             nodes=nodes or 1, base_port=port or 9092, secure=secure, tls=tls)


progress = broker.progress_to_stderr


def cmd_start(args: argparse.Namespace) -> int:
    spec = spec_from(args, Settings.from_env())
    bootstrap = broker.start(spec, progress)
    if spec.tls:
        progress(f"TLS: clients trust {tls.paths(spec.state_dir).ca_cert} "
                 f"(export CASEBRIDGE_KAFKA_CA={tls.paths(spec.state_dir).ca_cert})")
    print(bootstrap)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    broker.stop(spec_from(args, Settings.from_env()), progress)
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    broker.reset(spec_from(args, Settings.from_env()), progress)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    spec = spec_from(args, Settings.from_env())
    nodes = broker.status(spec)
    for node, pid in nodes.items():
        state = f"running (pid {pid})" if pid else "stopped"
        print(f"node {node}: {state} on {spec.host}:{spec.client_port(node)}")
    up = bool(nodes) and all(nodes.values()) and broker.answers(spec.bootstrap, spec.nodes,
                                                                 broker.client_auth(spec))
    print(f"bootstrap {spec.bootstrap}: {'answering' if up else 'not answering'}")
    return 0 if up else 1
