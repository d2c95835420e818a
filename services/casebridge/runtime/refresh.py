"""Directory updates on ``cb.directory``, applied by a running router or node without restart.

The secretariat publishes each new signed directory (``casebridge directory publish``). Every
app follows the topic with its own agent: a directory that verifies against the trust anchor and
is newer than the one in use replaces it (new keys, rotations, revocations take effect at once);
anything else is refused and logged, and the current directory stays. When the directory in use
expires, processing waits (fail closed) until a current one arrives: nothing is lost, the
records stay in Kafka, uncommitted.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from casebridge.core.directory import verify_directory
from casebridge.core.errors import CaseBridgeError
from casebridge.runtime.logging import get_logger
from casebridge.runtime.world import World

if TYPE_CHECKING:  # faust only for the faust apps' agent: the node follows on confluent-kafka
    import faust

DIRECTORY_TOPIC = "cb.directory"
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


def follow_directory(app: faust.App, holder: Holder) -> None:
    """Add the agent that applies every directory update published on ``cb.directory``."""
    from casebridge.runtime.kafka import raw_topic

    async def refresh(stream: Any) -> Any:
        async for value in stream:
            holder.world = apply_directory(holder.world, value, datetime.now(UTC))
            yield None

    app.agent(raw_topic(app, DIRECTORY_TOPIC), name="directory")(refresh)


async def until_current(holder: Holder, what: str) -> None:
    """Wait while the directory in use has expired (fail closed), saying so once."""
    said = False
    while holder.world.directory.expires_at <= datetime.now(UTC):
        if not said:
            log.error("directory_expired", expired_at=holder.world.directory.expires_at.isoformat(),
                      waiting=what, fix="publish a current directory on cb.directory")
            said = True
        await asyncio.sleep(1.0)
