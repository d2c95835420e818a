"""The router's window of records in flight (router/window.py), with futures standing for sends."""

from __future__ import annotations

import asyncio
from typing import Any

from casebridge.router.window import Window


class Event:
    def __init__(self, offset: int, acked: list[int]) -> None:
        self.offset, self.acked = offset, acked

    def ack(self) -> bool:
        self.acked.append(self.offset)
        return True


def test_a_record_is_acked_when_its_sends_are_acknowledged_not_before() -> None:
    async def scenario() -> list[Any]:
        loop = asyncio.get_running_loop()
        window, acked = Window(), []
        sends = [loop.create_future() for _ in range(3)]
        for offset, acks in enumerate(sends):
            window.add(Event(offset, acked), acks)
        window.add(Event(3, acked), None)  # nothing to send (a dropped duplicate): acked at once
        seen = [list(acked)]
        sends[1].set_result(None)
        await asyncio.sleep(0)
        seen.append(list(acked))
        sends[0].set_result(None)
        sends[2].set_result(None)
        await asyncio.sleep(0)
        seen.append((list(acked), len(window.flights), window.failed))
        return seen

    assert asyncio.run(scenario()) == [[3], [3, 1], ([3, 1, 0, 2], 0, False)]


def test_after_a_failed_send_the_failed_records_are_routed_again_in_order() -> None:
    async def scenario() -> tuple[list[int], list[int], bool, int]:
        loop = asyncio.get_running_loop()
        window, acked, rerouted = Window(), [], []
        sends = [loop.create_future() for _ in range(4)]
        for offset, acks in enumerate(sends):
            window.add(Event(offset, acked), acks)
        sends[0].set_result(None)
        sends[1].set_exception(ConnectionError("broker away"))
        sends[3].set_exception(ConnectionError("broker away"))
        await asyncio.sleep(0)
        assert window.failed
        loop.call_later(0.01, sends[2].set_result, None)  # recovery waits for it to settle

        async def reroute(event: Any) -> None:
            rerouted.append(event.offset)

        count = await window.recover(reroute)
        return rerouted, acked, window.failed, count

    rerouted, acked, failed, count = asyncio.run(scenario())
    assert rerouted == [1, 3] and count == 2
    assert sorted(acked) == [0, 1, 2, 3] and not failed


def test_room_waits_while_the_window_is_full() -> None:
    async def scenario() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        window, acked = Window(limit=2), []
        sends = [loop.create_future() for _ in range(2)]
        for offset, acks in enumerate(sends):
            window.add(Event(offset, acked), acks)
        waiting = asyncio.ensure_future(window.room())
        for _ in range(20):  # let it run as far as it can without an acknowledgement
            await asyncio.sleep(0)
        blocked = not waiting.done()
        sends[0].set_result(None)
        await asyncio.wait_for(waiting, 1)
        return blocked, waiting.done()

    assert asyncio.run(scenario()) == (True, True)
