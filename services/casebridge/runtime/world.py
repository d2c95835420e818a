"""The trust world of a running process: schemas, the verified directory, the signed agreements.

Layout under ``$CASEBRIDGE_HOME/trust``: ``keys/`` (the keystore), ``directory.avro`` (signed by
the secretariat), ``agreements/<id>.yaml`` + ``<id>.sig.json`` (signed by every signatory).
``bootstrap_network`` makes all of it for a local network (demo, tests): keys for every
participant, the directory, and each agreement signed by its signatories' keys.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

from casebridge.core import avro, relay
from casebridge.core.agreements import (
    Agreement,
    Signature,
    load_agreements,
    parse_agreement,
    sign_agreement,
    signatures_json,
)
from casebridge.core.directory import SECRETARIAT, verify_directory
from casebridge.core.errors import CaseBridgeError, PolicyError
from casebridge.core.keys import Identity
from casebridge.core.model import Directory
from casebridge.core.routing import Policy, index_agreements
from casebridge.runtime.keystore import bootstrap_trust, load_default_schemas, load_identity, load_public
from casebridge.runtime.settings import PROJECT_ROOT

PARTICIPANTS = PROJECT_ROOT / "deploy" / "directory" / "participants.yaml"
AGREEMENTS = PROJECT_ROOT / "deploy" / "agreements"


@dataclass(frozen=True)
class World:
    """Everything a node or the router trusts, loaded and verified once at start."""

    trust_dir: Path
    schemas: avro.SchemaSet
    directory: Directory
    policy: Policy
    agreements: tuple[Agreement, ...]
    max_age: timedelta = timedelta(days=7)
    anchor: bytes = b""  # the secretariat's signing key: trust anchor of directory updates
    custody: str | None = None  # the one participant whose private keys this process may load

    @property
    def keystore(self) -> Path:
        return self.trust_dir / "keys"

    def identity(self, participant: str) -> Identity:
        """The participant's private keys; a process in ``custody`` of one participant gets no other's."""
        if self.custody is not None and participant != self.custody:
            raise KeyCustody(f"this process acts as {self.custody}: it may not load {participant}'s keys")
        return load_identity(self.keystore, participant)

    def in_custody_of(self, participant: str) -> World:
        """This world, restricted to ``participant``'s private keys (a node started ``--as`` it)."""
        return replace(self, custody=participant)

    def context(self, now: datetime) -> relay.Context:
        return relay.Context(self.directory, self.policy, self.schemas, now, self.max_age)


class TrustMissing(CaseBridgeError, FileNotFoundError):
    """No directory or secretariat key under ``$CASEBRIDGE_HOME/trust``."""

    code = "trust_missing"


class KeyCustody(CaseBridgeError, PermissionError):
    """A process asked for private keys of a participant it does not act as."""

    code = "key_custody"


def document_paths(folder: Path) -> list[Path]:
    """The agreement documents of a folder (``calendars.yaml`` beside them is not one)."""
    return [p for p in sorted(folder.glob("*.yaml")) if p.name != "calendars.yaml"]


def read_text(path: Path) -> str:
    """Exact file text, no newline translation: these bytes are what the parties sign."""
    return path.read_bytes().decode("utf-8")


def trust_dir(home: Path) -> Path:
    return home / "trust"


def load_world(home: Path, now: datetime) -> World:
    """Verify the directory against the secretariat's key and load every signed agreement."""
    folder = trust_dir(home)
    if not (folder / "directory.avro").exists() or not (folder / "keys" / SECRETARIAT).exists():
        raise TrustMissing(
            f"no trust material in {folder}: run `casebridge trust` (keys, a signed directory and "
            "signed agreements for a local network; CASEBRIDGE_HOME chooses where)")
    schemas = load_default_schemas()
    anchor = load_public(folder / "keys", SECRETARIAT)[-1].signing_public
    directory = verify_directory(schemas, (folder / "directory.avro").read_bytes(), anchor, now)
    documents = {p.name: read_text(p) for p in document_paths(folder / "agreements")}
    signatures = {
        p.name.removesuffix(".sig.json"): p.read_text() for p in (folder / "agreements").glob("*.sig.json")
    }
    loaded = load_agreements(documents, signatures, directory, now)
    if loaded.errors:
        raise PolicyError("; ".join(str(e) for e in loaded.errors))
    return World(folder, schemas, directory, index_agreements(loaded.agreements), loaded.agreements,
                 anchor=anchor)


def bootstrap_network(home: Path, now: datetime, validity: timedelta = timedelta(days=30)) -> World:
    """Keys, a signed directory and signed agreements for a local network under ``home``."""
    folder = trust_dir(home)
    trust = bootstrap_trust(folder, PARTICIPANTS, now, validity)
    target = folder / "agreements"
    target.mkdir(parents=True, exist_ok=True)
    for source in document_paths(AGREEMENTS):
        text = read_text(source)
        agreement = parse_agreement(text, source.name)
        signatures = [sign_as(load_identity(trust.keystore, who), text, now) for who in agreement.signatories]
        (target / source.name).write_text(text)
        (target / f"{agreement.id}.sig.json").write_text(signatures_json(agreement, signatures))
    return replace(load_world(home, now))


def sign_as(identity: Identity, text: str, now: datetime) -> Signature:
    return sign_agreement(text, identity.participant, identity.signing_key_id, identity.signing_key, now)
