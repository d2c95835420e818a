"""Directory updates on ``cb.directory``, applied by a running service without restart.

The secretariat publishes each new signed directory (``casebridge directory publish``). Every
service follows the topic from its beginning (``ckafka.follow_directory``): a directory that
verifies against the trust anchor and is newer than the one in use replaces it (new keys,
rotations, revocations take effect at once); anything else is refused and logged, and the current
directory stays. When the directory in use expires, processing waits (fail closed) until a
current one arrives: nothing is lost, the records stay in Kafka, uncommitted.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Protocol

from casebridge.core.directory import verify_directory
from casebridge.core.errors import CaseBridgeError
from casebridge.runtime.logging import get_logger
from casebridge.runtime.world import World

log = get_logger("casebridge.directory")


class Holder(Protocol):
    world: World


def apply_directory(world: World, data: bytes, now: datetime) -> World:
    """The world with the directory in ``data`` if it verifies and is newer; else unchanged."""
    try:
        directory = verify_directory(world.schemas, data, world.anchor, now)
    except CaseBridgeError as exc:
        log.error("directory_refused", code=exc.code, why=exc.why)
        return world
    if directory.version <= world.directory.version:
        return world
    log.info("directory_applied", version=directory.version, expires_at=directory.expires_at.isoformat())
    return replace(world, directory=directory)
