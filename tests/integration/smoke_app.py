"""A one-agent faust app run as a real worker process by the smoke test.

It reads ``SMOKE_IN``, upper-cases each value, and writes it to ``SMOKE_OUT`` with the same key.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

from casebridge.runtime.kafka import create_app
from casebridge.runtime.settings import Settings

settings = Settings.from_env()
app = create_app(settings, os.environ.get("SMOKE_APP_ID", "casebridge-smoke"))
source = app.topic(os.environ.get("SMOKE_IN", "smoke.in"), key_type=bytes, value_type=bytes,
                   key_serializer="raw", value_serializer="raw")
sink = app.topic(os.environ.get("SMOKE_OUT", "smoke.out"), key_type=bytes, value_type=bytes,
                   key_serializer="raw", value_serializer="raw")


async def shout(stream: AsyncIterator[tuple[bytes, bytes]]) -> AsyncIterator[bytes]:
    async for key, value in stream.items():  # type: ignore[attr-defined]
        await sink.send(key=key, value=value.upper())
        yield value


app.agent(source, name="shout")(shout)

if __name__ == "__main__":
    app.main()
