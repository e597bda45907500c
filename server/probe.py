"""``python -m server.probe URL``: prove a deployed echo server works.

Connects to a WebSocket URL, sends text and binary messages, checks that each
comes back unchanged and with its type, closes cleanly, and exits 0 with one
line saying so. Any failure exits 1 with a one-line reason. The Helm chart's
``helm test`` hook and the e2e suite run it; so can a person::

    python -m server.probe ws://localhost:8080/ws
    python -m server.probe ws://127.0.0.1:31080/ws --host websocket-server.default.example.com

``--host`` sets the HTTP ``Host`` header, which is how an ingress gateway
(Kourier, Istio) picks the Knative Service when it is reached by address.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

__all__ = ["ProbeError", "ProbeResult", "main", "probe", "probe_with_retries"]


class ProbeError(Exception):
    """The server did not echo as it should; the message says how."""


@dataclass(frozen=True)
class ProbeResult:
    url: str
    echoes: int
    seconds: float
    attempts: int


def _messages(count: int) -> list[str | bytes]:
    """Alternating text (with multi-byte UTF-8) and random binary messages."""
    out: list[str | bytes] = []
    for i in range(count):
        out.append(f"probe {i} ✓ héllo" if i % 2 == 0 else os.urandom(32 + i))
    return out


async def probe(
    url: str, host: str | None = None, count: int = 2, timeout: float = 10.0
) -> ProbeResult:
    """One attempt: connect, echo ``count`` messages, close with 1000."""
    started = time.monotonic()
    headers = {"Host": host} if host else {}
    request = HTTPRequest(url, headers=headers, connect_timeout=timeout, request_timeout=timeout)
    try:
        conn: WebSocketClientConnection = await asyncio.wait_for(
            websocket_connect(request), timeout
        )
    except HTTPClientError as exc:
        raise ProbeError(f"handshake refused with HTTP {exc.code} ({exc.message})") from None
    except asyncio.TimeoutError:
        raise ProbeError(f"no handshake within {timeout:g} s") from None
    except OSError as exc:
        raise ProbeError(f"cannot connect: {exc.strerror or exc}") from None
    try:
        for i, sent in enumerate(_messages(count)):
            await conn.write_message(sent, binary=isinstance(sent, bytes))
            try:
                got = await asyncio.wait_for(conn.read_message(), timeout)
            except asyncio.TimeoutError:
                raise ProbeError(f"message {i}: no echo within {timeout:g} s") from None
            if got is None:
                raise ProbeError(
                    f"message {i}: connection closed instead of an echo "
                    f"(close code {conn.close_code}, reason {conn.close_reason!r})"
                )
            if type(got) is not type(sent):
                kind = "binary" if isinstance(sent, bytes) else "text"
                raise ProbeError(f"message {i}: sent {kind}, got {type(got).__name__} back")
            if got != sent:
                raise ProbeError(f"message {i}: echo differs from what was sent")
    finally:
        conn.close(1000, "probe done")
        # Wait for the closing handshake, so the socket is closed when we return.
        with contextlib.suppress(asyncio.TimeoutError):
            while await asyncio.wait_for(conn.read_message(), timeout) is not None:
                pass
    return ProbeResult(url, count, time.monotonic() - started, 1)


async def probe_with_retries(
    url: str,
    host: str | None = None,
    count: int = 2,
    timeout: float = 10.0,
    retry_for: float = 0.0,
    interval: float = 1.0,
) -> ProbeResult:
    """:func:`probe`, tried again every ``interval`` s for up to ``retry_for`` s
    (a route that is still converging answers 404/503 for a while)."""
    deadline = time.monotonic() + retry_for
    attempts = 0
    while True:
        attempts += 1
        try:
            result = await probe(url, host, count, timeout)
        except ProbeError as exc:
            if time.monotonic() + interval > deadline:
                raise ProbeError(f"{exc} (after {attempts} attempt(s))") from None
            await asyncio.sleep(interval)
            continue
        return ProbeResult(result.url, result.echoes, result.seconds, attempts)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m server.probe",
        description="Check that a WebSocket echo server echoes text and binary messages.",
    )
    parser.add_argument("url", help="WebSocket URL, e.g. ws://localhost:8080/ws")
    parser.add_argument("--host", help="Host header to send (ingress routing)")
    parser.add_argument("--count", type=int, default=2, help="messages to echo (default 2)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per step")
    parser.add_argument(
        "--retry-for", type=float, default=0.0, help="keep retrying failures for this many seconds"
    )
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between retries")
    args = parser.parse_args(argv)
    if not args.url.startswith(("ws://", "wss://")):
        parser.error(f"URL must start with ws:// or wss://, got {args.url!r}")
    if args.count < 1:
        parser.error("--count must be at least 1")
    try:
        result = asyncio.run(
            probe_with_retries(
                args.url, args.host, args.count, args.timeout, args.retry_for, args.interval
            )
        )
    except ProbeError as exc:
        print(f"probe: FAIL {args.url}: {exc}", file=sys.stderr)
        sys.exit(1)
    print(
        f"probe: OK {result.url}: {result.echoes} echoes in {1000 * result.seconds:.0f} ms "
        f"(attempt {result.attempts})"
    )


if __name__ == "__main__":
    main()
