"""Serving an aiohttp application: bind address and optional TLS from the settings, quick stop.

The node's API and the monitor's page both listen on ``CASEBRIDGE_HTTP_HOST`` (default
127.0.0.1) and speak HTTPS when ``CASEBRIDGE_HTTP_TLS_CERT`` and ``CASEBRIDGE_HTTP_TLS_KEY`` name a
PEM certificate chain and its key (plain HTTP otherwise, as the demo does on loopback).
"""

from __future__ import annotations

import asyncio
import ssl

from aiohttp import web

from casebridge.core.errors import CaseBridgeError
from casebridge.runtime.settings import Settings

SHUTDOWN_SECONDS = 2.0  # open connections get this long when the service stops (SIGTERM)
MAX_LINE_BYTES = 64 * 1024  # request line and each header: past aiohttp's 8 KiB the parser answers
# in text/plain before any handler runs; up to this the application answers, in JSON with a code


class HttpTlsError(CaseBridgeError, ValueError):
    """The HTTP TLS settings name files that cannot be loaded as a certificate and key."""

    code = "http_tls_invalid"


def server_tls(settings: Settings) -> ssl.SSLContext | None:
    """A server-side TLS context from the settings' certificate and key, or None for plain HTTP."""
    if not settings.http_tls_cert and not settings.http_tls_key:
        return None
    if not (settings.http_tls_cert and settings.http_tls_key):
        raise HttpTlsError("set both CASEBRIDGE_HTTP_TLS_CERT and CASEBRIDGE_HTTP_TLS_KEY, or neither")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.http_tls_cert, settings.http_tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise HttpTlsError(f"cannot load {settings.http_tls_cert} / {settings.http_tls_key}: {exc}") from exc
    return context


def base_url(host: str, port: int, tls: bool) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}"


async def start(app: web.Application, host: str, port: int, tls: ssl.SSLContext | None) -> web.AppRunner:
    """Listen on ``host:port`` (HTTPS with ``tls``); the caller ends it with ``runner.cleanup()``."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_SECONDS,
                           max_line_size=MAX_LINE_BYTES, max_field_size=MAX_LINE_BYTES)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=tls).start()
    return runner


async def serve_forever(app: web.Application, host: str, port: int, tls: ssl.SSLContext | None,
                        started: asyncio.Event | None = None) -> None:
    """``start``, then wait until cancelled (the worker stopping) and close within a few seconds."""
    runner = await start(app, host, port, tls)
    if started is not None:
        started.set()
    try:
        await asyncio.Event().wait()
    finally:
        await asyncio.wait_for(runner.cleanup(), timeout=SHUTDOWN_SECONDS + 1)
