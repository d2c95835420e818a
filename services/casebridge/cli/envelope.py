"""``casebridge keys new``, ``casebridge directory build|verify``, ``casebridge schemas check``.

Defaults come from ``Settings``: the keystore is ``$CASEBRIDGE_HOME/keys`` (``.casebridge/keys``),
the signed directory ``$CASEBRIDGE_HOME/directory.avro``, schemas and participants from the
source tree (``schemas/avro``, ``deploy/directory/participants.yaml``). No private key material is
ever printed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from casebridge.core import avro
from casebridge.core.directory import SECRETARIAT, verify_directory
from casebridge.runtime import keystore
from casebridge.runtime.settings import Settings

LOCK_NAME = "released.lock"


def register(sub: Any) -> None:
    register_keys(sub)
    register_directory(sub)
    register_schemas(sub)


def register_keys(sub: Any) -> None:
    parser = sub.add_parser("keys", help="participant key pairs (Ed25519 sign, X25519 encrypt)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    new = actions.add_parser("new", help="generate a participant's key pairs into the keystore")
    new.add_argument("participant", help="participant id, e.g. TH.MSDHS")
    new.add_argument("--keystore", type=Path, help="default: $CASEBRIDGE_HOME/keys")
    new.add_argument("--rotate", action="store_true", help="retire existing keys, make new ones")
    new.set_defaults(func=cmd_keys_new)


def register_directory(sub: Any) -> None:
    parser = sub.add_parser("directory", help="build or verify the secretariat-signed directory")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = actions.add_parser("build", help="collect public keys and sign with REG.SECRETARIAT")
    build.add_argument("--keystore", type=Path, help="default: $CASEBRIDGE_HOME/keys")
    build.add_argument("--participants", type=Path, help="default: deploy/directory/...")
    build.add_argument("--out", type=Path, help="default: $CASEBRIDGE_HOME/directory.avro")
    build.add_argument("--valid-days", type=int, default=30, help="validity (default 30 days)")
    build.add_argument("--revoke", action="append", default=[], metavar="KEY_ID",
                       help="revoke a key from now on (repeatable)")
    build.set_defaults(func=cmd_directory_build)
    check = actions.add_parser("verify", help="verify a signed directory against the trust anchor")
    check.add_argument("file", type=Path)
    check.add_argument("--keystore", type=Path, help="anchor from <keystore>/REG.SECRETARIAT")
    check.add_argument("--anchor", type=Path, help="a public.json of the secretariat to trust")
    check.set_defaults(func=cmd_directory_verify)
    publish = actions.add_parser("publish", help="publish a signed directory on cb.directory "
                                 "(running routers and nodes apply it without restart)")
    publish.add_argument("file", type=Path)
    publish.set_defaults(func=cmd_directory_publish)


def register_schemas(sub: Any) -> None:
    parser = sub.add_parser("schemas", help="the Avro schemas and their released fingerprints")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, func, text in (
        ("check", cmd_schemas_check, "every schema parses; released data still reads"),
        ("release", cmd_schemas_release, "add the current fingerprints to the lock file"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("--dir", type=Path, help="default: <source tree>/schemas/avro")
        action.add_argument("--lock", type=Path, help=f"default: <dir>/{LOCK_NAME}")
        action.set_defaults(func=func)


def keystore_of(args: argparse.Namespace, settings: Settings) -> Path:
    return args.keystore or settings.home / "keys"


def schema_paths(args: argparse.Namespace, settings: Settings) -> tuple[Path, Path]:
    folder = args.dir or settings.project_root / "schemas" / "avro"
    return folder, args.lock or folder / LOCK_NAME


def default_schemas(settings: Settings) -> avro.SchemaSet:
    folder = settings.project_root / "schemas" / "avro"
    return avro.load_schemas(folder, folder / LOCK_NAME)


def cmd_keys_new(args: argparse.Namespace) -> int:
    store = keystore_of(args, Settings.from_env())
    try:
        public = keystore.new_keys(store, args.participant, datetime.now(UTC), args.rotate)
    except FileExistsError as exc:
        print(f"casebridge keys: {exc}", file=sys.stderr)
        return 1
    print(f"{public.participant}: signing key {public.signing_key_id}, "
          f"encryption key {public.encryption_key_id} in {store / public.participant}")
    return 0


def cmd_directory_build(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    store, now = keystore_of(args, settings), datetime.now(UTC)
    participants = args.participants or settings.project_root / "deploy/directory/participants.yaml"
    people = keystore.read_participants(participants)
    revoked = dict.fromkeys(args.revoke, now)
    directory = keystore.directory_from_keystore(
        store, people, now, timedelta(days=args.valid_days), revoked
    )
    out = args.out or settings.home / "directory.avro"
    secretariat = keystore.load_identity(store, SECRETARIAT)
    keystore.write_directory(out, directory, secretariat, default_schemas(settings))
    print(f"directory v{directory.version}: {len(directory.participants)} participants, "
          f"expires {directory.expires_at.isoformat()}, written to {out}")
    return 0


def cmd_directory_publish(args: argparse.Namespace) -> int:
    from casebridge.runtime.kafka import publish_once

    settings = Settings.from_env()
    data = args.file.read_bytes()
    asyncio.run(publish_once(settings, "cb.directory", b"directory", data))
    print(f"published {args.file} ({len(data)} bytes) on cb.directory")
    return 0


def cmd_directory_verify(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    anchor_file = args.anchor or keystore_of(args, settings) / SECRETARIAT / keystore.PUBLIC_FILE
    anchor = keystore.PublicKeys.from_json(anchor_file.read_text(), str(anchor_file))
    directory = verify_directory(
        default_schemas(settings), args.file.read_bytes(), anchor.signing_public, datetime.now(UTC)
    )
    for person in directory.participants.values():
        keys = ", ".join(f"{k.use}:{k.key_id}{' revoked' if k.revoked_at else ''}"
                         for k in person.keys)
        print(f"{person.id:<16} {person.role:<11} {keys}")
    print(f"ok: directory v{directory.version} signed by {SECRETARIAT}, "
          f"expires {directory.expires_at.isoformat()}")
    return 0


def cmd_schemas_check(args: argparse.Namespace) -> int:
    folder, lock = schema_paths(args, Settings.from_env())
    problems = avro.check_schemas(folder, lock)
    for problem in problems:
        print(f"problem: {problem}")
    if not problems:
        released = len(avro.read_lock(lock))
        print(f"ok: {len(list(folder.glob('*.avsc')))} schemas parse, "
              f"{released} released schemas still read")
    return 1 if problems else 0


def cmd_schemas_release(args: argparse.Namespace) -> int:
    folder, lock = schema_paths(args, Settings.from_env())
    old = avro.read_lock(lock) if lock.exists() else ()
    known = {(e.name, e.fingerprint) for e in old}
    new = tuple(e for e in avro.released_now(avro.load_schemas(folder))
                if (e.name, e.fingerprint) not in known)
    avro.write_lock(lock, old + new)
    print(f"released {len(new)} new schema versions into {lock}")
    return 0
