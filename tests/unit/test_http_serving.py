"""``casebridge.runtime.http``: the node API and the monitor listen where the settings say, over
TLS when a certificate and key are given, and stop quickly."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from casebridge.localkafka import tls
from casebridge.runtime import http
from casebridge.runtime.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def hello_app() -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    api = web.Application()
    api.router.add_get("/health", hello)
    return api


def test_settings_read_the_bind_address_and_tls_files() -> None:
    """CASEBRIDGE_HTTP_HOST / _TLS_CERT / _TLS_KEY are read once; the key path is not in repr."""
    settings = Settings.from_env({"CASEBRIDGE_HTTP_HOST": "10.1.2.3", "CASEBRIDGE_HTTP_TLS_CERT": "/c.pem",
                                  "CASEBRIDGE_HTTP_TLS_KEY": "/k.pem"})
    assert (settings.http_host, settings.http_tls_cert) == ("10.1.2.3", "/c.pem")
    assert settings.http_tls_key == "/k.pem"
    assert "/k.pem" not in repr(settings)
    assert Settings.from_env({}).http_host == "127.0.0.1" and http.server_tls(Settings.from_env({})) is None


@pytest.mark.parametrize(("cert", "key"), [("/no/such.pem", "/no/such.pem"), ("/c.pem", "")])
def test_tls_settings_that_cannot_be_loaded_stop_with_a_code(cert: str, key: str) -> None:
    """A missing file, or only one of the two settings, is http_tls_invalid (no traceback)."""
    with pytest.raises(http.HttpTlsError) as refused:
        http.server_tls(Settings(http_tls_cert=cert, http_tls_key=key))
    assert refused.value.code == "http_tls_invalid"


async def test_https_with_the_given_certificate(tmp_path: Path) -> None:
    """With a certificate and key the server speaks HTTPS that a client trusting the CA accepts."""
    ca = tls.ensure_local_ca(tmp_path)
    settings = Settings(http_tls_cert=str(ca.server), http_tls_key=str(ca.server))
    port = free_port()
    runner = await http.start(hello_app(), "127.0.0.1", port, http.server_tls(settings))
    try:
        trust = ssl.create_default_context(cafile=str(ca.ca_cert))
        async with aiohttp.ClientSession() as session:
            async with session.get(f"https://127.0.0.1:{port}/health", ssl=trust) as response:
                assert (response.status, await response.json()) == (200, {"ok": True})
            with pytest.raises(aiohttp.ClientError):
                await session.get(f"http://127.0.0.1:{port}/health")
    finally:
        await runner.cleanup()


async def test_serving_stops_within_seconds_of_being_cancelled_with_a_client_connected() -> None:
    """Cancelling serve_forever (the worker stopping) closes the listener within 5 s even while
    a client holds a keep-alive connection."""
    port, started = free_port(), asyncio.Event()
    task = asyncio.create_task(http.serve_forever(hello_app(), "127.0.0.1", port, None, started))
    await started.wait()
    async with aiohttp.ClientSession() as session:
        assert (await session.get(f"http://127.0.0.1:{port}/health")).status == 200
        begun = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - begun < 5
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


async def test_a_request_line_past_8_kib_reaches_the_application() -> None:
    """A 20 KiB query string is answered by the application (in JSON), not refused by aiohttp's
    parser in text/plain before any handler runs."""
    port = free_port()
    runner = await http.start(hello_app(), "127.0.0.1", port, None)
    try:
        async with aiohttp.ClientSession() as session:
            response = await session.get(f"http://127.0.0.1:{port}/health", params={"after": "x" * 20_000})
            assert (response.status, response.content_type) == (200, "application/json")
    finally:
        await runner.cleanup()
