"""The keystore on disk, and the one-call trust bootstrap for demos and integration tests.

Layout: ``<keystore>/<participant>/signing.key`` (Ed25519, PKCS#8 PEM, mode 0600),
``encryption.key`` (X25519, PKCS#8 PEM, mode 0600) and ``public.json`` (participant, key ids,
raw public keys in base64, ``created_at``). Rotation moves the current files to
``<participant>/retired/<signing_key_id>/`` and stamps ``retired_at`` in that ``public.json``,
so a directory built afterwards still lists the old keys, valid until the rotation.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import yaml

from casebridge.core import avro
from casebridge.core.directory import (
    SECRETARIAT,
    build_directory,
    parse_participants,
    revoke,
    sign_directory,
)
from casebridge.core.errors import Malformed, PolicyError, UnknownKey
from casebridge.core.keys import (
    Identity,
    encryption_public,
    generate_identity,
    identity_of,
    load_encryption_pem,
    load_signing_pem,
    private_pem,
    signing_public,
)
from casebridge.core.model import Directory, KeyRecord, Participant
from casebridge.runtime.settings import PROJECT_ROOT

SIGNING_FILE = "signing.key"
ENCRYPTION_FILE = "encryption.key"
PUBLIC_FILE = "public.json"
RETIRED_DIR = "retired"
DEFAULT_SCHEMAS = PROJECT_ROOT / "schemas" / "avro"
DEFAULT_PARTICIPANTS = PROJECT_ROOT / "deploy" / "directory" / "participants.yaml"


@dataclass(frozen=True)
class PublicKeys:
    """The content of ``public.json``: what a participant hands to the secretariat."""

    participant: str
    signing_key_id: str
    encryption_key_id: str
    signing_public: bytes
    encryption_public: bytes
    created_at: datetime
    retired_at: datetime | None = None

    def to_json(self) -> str:
        doc: dict[str, str] = {
            "participant": self.participant,
            "signing_key_id": self.signing_key_id,
            "encryption_key_id": self.encryption_key_id,
            "signing_public_b64": base64.b64encode(self.signing_public).decode(),
            "encryption_public_b64": base64.b64encode(self.encryption_public).decode(),
            "created_at": self.created_at.isoformat(),
        }
        if self.retired_at is not None:
            doc["retired_at"] = self.retired_at.isoformat()
        return json.dumps(doc, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str) -> PublicKeys:
        try:
            doc = json.loads(text)
            retired = doc.get("retired_at")
            return cls(
                participant=doc["participant"],
                signing_key_id=doc["signing_key_id"],
                encryption_key_id=doc["encryption_key_id"],
                signing_public=base64.b64decode(doc["signing_public_b64"], validate=True),
                encryption_public=base64.b64decode(doc["encryption_public_b64"], validate=True),
                created_at=datetime.fromisoformat(doc["created_at"]),
                retired_at=datetime.fromisoformat(retired) if retired else None,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise Malformed(f"{source}: unreadable public key file ({exc})") from exc


@dataclass(frozen=True)
class Trust:
    """What ``bootstrap_trust`` made: the keystore, the signed directory file and its anchor."""

    keystore: Path
    directory_file: Path
    directory: Directory
    anchor: bytes  # the secretariat's raw Ed25519 public key


def public_of(identity: Identity, created_at: datetime) -> PublicKeys:
    return PublicKeys(
        participant=identity.participant,
        signing_key_id=identity.signing_key_id,
        encryption_key_id=identity.encryption_key_id,
        signing_public=signing_public(identity),
        encryption_public=encryption_public(identity),
        created_at=created_at,
    )


def write_private(path: Path, pem: bytes) -> None:
    """Create ``path`` with mode 0600 from the start (never world-readable, not even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


def new_keys(keystore: Path, participant: str, now: datetime, rotate: bool = False) -> PublicKeys:
    """Generate and store a participant's key pairs; refuses to overwrite unless rotating."""
    home = keystore / participant
    if (home / PUBLIC_FILE).exists():
        if not rotate:
            raise FileExistsError(f"{home} already holds keys (rotate to replace them)")
        retire(home, now)
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    identity = generate_identity(participant)
    write_private(home / SIGNING_FILE, private_pem(identity.signing_key))
    write_private(home / ENCRYPTION_FILE, private_pem(identity.encryption_key))
    public = public_of(identity, now)
    (home / PUBLIC_FILE).write_text(public.to_json(), encoding="utf-8")
    return public


def retire(home: Path, now: datetime) -> None:
    """Move the current keys under ``retired/<signing_key_id>/`` with ``retired_at`` stamped."""
    current = PublicKeys.from_json((home / PUBLIC_FILE).read_text(), str(home / PUBLIC_FILE))
    target = home / RETIRED_DIR / current.signing_key_id
    target.mkdir(parents=True, mode=0o700)
    for name in (SIGNING_FILE, ENCRYPTION_FILE):
        (home / name).rename(target / name)
    stamped = PublicKeys(**{**current.__dict__, "retired_at": now})
    (target / PUBLIC_FILE).write_text(stamped.to_json(), encoding="utf-8")
    (home / PUBLIC_FILE).unlink()


def load_identity(keystore: Path, participant: str) -> Identity:
    """A participant's current private identity from the keystore."""
    home = keystore / participant
    try:
        signing = load_signing_pem((home / SIGNING_FILE).read_bytes())
        encryption = load_encryption_pem((home / ENCRYPTION_FILE).read_bytes())
    except FileNotFoundError as exc:
        raise UnknownKey(f"no keys for {participant} in {keystore}") from exc
    return identity_of(participant, signing, encryption)


def load_public(keystore: Path, participant: str) -> tuple[PublicKeys, ...]:
    """Current and retired public keys of a participant (current last)."""
    home = keystore / participant
    paths = [*sorted((home / RETIRED_DIR).glob(f"*/{PUBLIC_FILE}")), home / PUBLIC_FILE]
    if not paths[-1].exists():
        raise UnknownKey(f"no keys for {participant} in {keystore}: run casebridge keys new")
    return tuple(PublicKeys.from_json(p.read_text(encoding="utf-8"), str(p)) for p in paths)


def key_records(public: PublicKeys) -> tuple[KeyRecord, KeyRecord]:
    return (
        KeyRecord(public.signing_key_id, "sign", public.signing_public, public.created_at,
                  public.retired_at),
        KeyRecord(public.encryption_key_id, "encrypt", public.encryption_public,
                  public.created_at, public.retired_at),
    )


def read_participants(path: Path) -> tuple[Participant, ...]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyError(f"{path}: {exc}") from exc
    return parse_participants(doc, str(path))


def directory_from_keystore(
    keystore: Path,
    participants: Iterable[Participant],
    now: datetime,
    validity: timedelta,
    revoked: Mapping[str, datetime] | None = None,
) -> Directory:
    """A directory of ``participants`` with every public key the keystore holds for them."""
    people = [
        Participant(p.id, p.country, p.role, p.name,
                    tuple(k for pub in load_public(keystore, p.id) for k in key_records(pub)))
        for p in participants
    ]
    directory = build_directory(people, int(now.timestamp()), now, validity)
    for revoked_id, at in (revoked or {}).items():
        directory = revoke(directory, revoked_id, at)
    return directory


def write_directory(
    path: Path, directory: Directory, secretariat: Identity, schemas: avro.SchemaSet
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(sign_directory(schemas, directory, secretariat))


def load_default_schemas() -> avro.SchemaSet:
    """The schemas of this source tree: ``<repo>/schemas/avro`` plus its ``released.lock``."""
    return avro.load_schemas(DEFAULT_SCHEMAS, DEFAULT_SCHEMAS / "released.lock")


def bootstrap_trust(
    state_dir: Path,
    participants_yaml: Path,
    now: datetime,
    validity: timedelta,
    schemas: avro.SchemaSet | None = None,
) -> Trust:
    """Keys for every participant (kept if present) and a signed directory under ``state_dir``."""
    keystore = state_dir / "keys"
    people = read_participants(participants_yaml)
    for person in people:
        if not (keystore / person.id / PUBLIC_FILE).exists():
            new_keys(keystore, person.id, now)
    directory = directory_from_keystore(keystore, people, now, validity)
    secretariat = load_identity(keystore, SECRETARIAT)
    target = state_dir / "directory.avro"
    write_directory(target, directory, secretariat, schemas or load_default_schemas())
    return Trust(keystore, target, directory, signing_public(secretariat))
