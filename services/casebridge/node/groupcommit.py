"""Group commit of submitted events: many ``POST /events`` requests, one synced transaction.

A request hands its document over and waits; one writer thread seals and queues every document
that arrived while the previous group was being written, in one transaction synced to disk
(``service.submit_many``), then answers each request with its own outcome (or the exception
``service.submit`` would have raised). So the 202 still means "queued durably", and a disk sync
is shared by the whole group instead of paid per request. Sealing runs off the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from casebridge.node.service import Submitted

Doc = Mapping[str, Any]
SubmitMany = Callable[[Sequence[Doc]], list[Submitted | Exception]]
MAX_GROUP = 256


class GroupCommit:
    """Collects documents from the event loop and writes them in groups on one thread."""

    def __init__(self, submit_many: SubmitMany, max_group: int = MAX_GROUP) -> None:
        self._submit_many = submit_many
        self._max_group = max_group
        self._pending: list[tuple[Doc, asyncio.Future[Submitted]]] = []
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="node-commit")
        self._draining: asyncio.Task[None] | None = None

    async def submit(self, doc: Doc) -> Submitted:
        """Queue ``doc`` with the next group; its outcome once that group is committed."""
        future: asyncio.Future[Submitted] = asyncio.get_running_loop().create_future()
        self._pending.append((doc, future))
        if self._draining is None or self._draining.done():
            self._draining = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            group, self._pending = self._pending[: self._max_group], self._pending[self._max_group :]
            try:
                results = await loop.run_in_executor(self._writer, self._submit_many, [d for d, _ in group])
            except Exception as exc:  # the whole group was rolled back: each request hears why
                results = [exc] * len(group)
            for (_, future), result in zip(group, results, strict=True):
                answer(future, result)

    def close(self) -> None:
        self._writer.shutdown(wait=False, cancel_futures=True)


def answer(future: asyncio.Future[Submitted], result: Submitted | Exception) -> None:
    if future.done():  # the request went away (client disconnected)
        return
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)
