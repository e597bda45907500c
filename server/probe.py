"""``python -m server.probe URL``: prove a deployed echo server works.

Connects to a WebSocket URL, sends text and binary messages, checks that each
comes back unchanged and with its type, closes cleanly, and exits 0 with one
line saying so. Any failure exits 1 with a one-line reason. The Helm chart's
``helm test`` hook and the e2e suite run it; so can a person::

    python -m server.probe ws://localhost:8080/ws
    python -m server.probe ws://127.0.0.1:31080/ws --host websocket-server.default.example.com

``--host`` sets the HTTP ``Host`` header, which is how an ingress gateway
(Kourier, Istio) picks the Knative Service when it is reached by address.

Every result line names the close code and reason the connection ended
with. ``--until-close SECONDS`` keeps the connection open after the echoes,
echoing one message a second, until the server closes it (a maximum
connection age, a drain): it passes when the server sends a close frame in
time and reports its code and reason, and fails on a cut without one (1006)
or when no close comes::

    $ python -m server.probe ws://localhost:8080/ws --until-close 700
    probe: OK ws://localhost:8080/ws: 542 echoes in 540123 ms (attempt 1);
    server closed with close code 1001, reason 'max connection age'

(one line, folded here).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import tornado.websocket
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
    #: The code and reason of the close frame the connection ended with
    #: (the server's answer to our 1000, or the server's own close).
    close_code: int | None = None
    close_reason: str | None = None
    #: Whether the server closed the connection first (``until_close``).
    server_closed: bool = False

    def describe_close(self) -> str:
        who = "server closed" if self.server_closed else "closed"
        return f"{who} with {_close_text(self.close_code, self.close_reason)}"


def _close_text(code: int | None, reason: str | None) -> str:
    if code is None:
        return "close code 1006 (no close frame: the connection was cut)"
    return f"close code {code}, reason {reason or ''!r}"


def _messages(count: int) -> list[str | bytes]:
    """Alternating text (with multi-byte UTF-8) and random binary messages."""
    out: list[str | bytes] = []
    for i in range(count):
        out.append(f"probe {i} ✓ héllo" if i % 2 == 0 else os.urandom(32 + i))
    return out


async def probe(
    url: str,
    host: str | None = None,
    count: int = 2,
    timeout: float = 10.0,
    until_close: float = 0.0,
) -> ProbeResult:
    """One attempt: connect, echo ``count`` messages, close with 1000; or,
    with ``until_close``, keep echoing one message a second until the
    server closes the connection with a close frame (within that many s)."""
    started = time.monotonic()
    headers = {"Host": host} if host else {}
    request = HTTPRequest(url, headers=headers, connect_timeout=timeout, request_timeout=timeout)
    try:
        conn: WebSocketClientConnection = await asyncio.wait_for(
            websocket_connect(request), timeout
        )
    except HTTPClientError as exc:
        raise ProbeError(f"handshake refused with HTTP {exc.code} ({exc.message})") from None
    except TimeoutError:
        raise ProbeError(f"no handshake within {timeout:g} s") from None
    except OSError as exc:
        raise ProbeError(f"cannot connect: {exc.strerror or exc}") from None
    echoes = 0
    ended = False  # the connection closed under us: nothing left to read
    try:
        for i, sent in enumerate(_messages(count)):
            if await _echo(conn, i, sent, timeout) is None:
                ended = True
                raise ProbeError(
                    f"message {i}: connection closed instead of an echo "
                    f"({_close_text(conn.close_code, conn.close_reason)})"
                )
            echoes += 1
        if until_close > 0:
            held_until = time.monotonic() + until_close
            i = count
            while True:
                got = await _echo(conn, i, f"probe {i}: waiting for the server's close", timeout)
                if got is None:
                    break
                echoes += 1
                i += 1
                if time.monotonic() >= held_until:
                    raise ProbeError(
                        f"the server did not close the connection within {until_close:g} s"
                    )
                # Wait a second before the next echo; a close frame ends the wait.
                with contextlib.suppress(asyncio.TimeoutError):
                    if await asyncio.wait_for(conn.read_message(), 1.0) is None:
                        break
            ended = True
            if conn.close_code is None:
                raise ProbeError(
                    f"after {echoes} echoes and {time.monotonic() - started:.1f} s: "
                    f"{_close_text(None, None)}"
                )
            return ProbeResult(
                url,
                echoes,
                time.monotonic() - started,
                1,
                conn.close_code,
                conn.close_reason,
                server_closed=True,
            )
    finally:
        conn.close(1000, "probe done")  # (nothing is sent if it is closed already)
        if not ended:
            # Wait for the closing handshake, so the socket is closed when we return.
            with contextlib.suppress(asyncio.TimeoutError):
                while await asyncio.wait_for(conn.read_message(), timeout) is not None:
                    pass
    return ProbeResult(
        url, echoes, time.monotonic() - started, 1, conn.close_code, conn.close_reason
    )


async def _echo(
    conn: WebSocketClientConnection, i: int, sent: str | bytes, timeout: float
) -> str | bytes | None:
    """Send ``sent``, return its echo (None: the connection closed instead)."""
    try:
        await conn.write_message(sent, binary=isinstance(sent, bytes))
    except tornado.websocket.WebSocketClosedError:
        return None
    try:
        got = await asyncio.wait_for(conn.read_message(), timeout)
    except TimeoutError:
        raise ProbeError(f"message {i}: no echo within {timeout:g} s") from None
    if got is None:
        return None
    if type(got) is not type(sent):
        kind = "binary" if isinstance(sent, bytes) else "text"
        raise ProbeError(f"message {i}: sent {kind}, got {type(got).__name__} back")
    if got != sent:
        raise ProbeError(f"message {i}: echo differs from what was sent")
    return got


async def probe_with_retries(
    url: str,
    host: str | None = None,
    count: int = 2,
    timeout: float = 10.0,
    retry_for: float = 0.0,
    interval: float = 1.0,
    until_close: float = 0.0,
) -> ProbeResult:
    """:func:`probe`, tried again every ``interval`` s for up to ``retry_for`` s
    (a route that is still converging answers 404/503 for a while)."""
    deadline = time.monotonic() + retry_for
    attempts = 0
    while True:
        attempts += 1
        try:
            result = await probe(url, host, count, timeout, until_close)
        except ProbeError as exc:
            if time.monotonic() + interval > deadline:
                raise ProbeError(f"{exc} (after {attempts} attempt(s))") from None
            await asyncio.sleep(interval)
            continue
        return dataclasses.replace(result, attempts=attempts)


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
    parser.add_argument(
        "--until-close",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="after the echoes, keep echoing one message a second until the server closes "
        "the connection; fail if it does not within SECONDS, or cuts it without a close frame",
    )
    args = parser.parse_args(argv)
    if not args.url.startswith(("ws://", "wss://")):
        parser.error(f"URL must start with ws:// or wss://, got {args.url!r}")
    if args.count < 1:
        parser.error("--count must be at least 1")
    if not (math.isfinite(args.until_close) and args.until_close >= 0):
        parser.error("--until-close must be a number of seconds, 0 (off) or more")
    try:
        result = asyncio.run(
            probe_with_retries(
                args.url,
                args.host,
                args.count,
                args.timeout,
                args.retry_for,
                args.interval,
                args.until_close,
            )
        )
    except ProbeError as exc:
        print(f"probe: FAIL {args.url}: {exc}", file=sys.stderr)
        sys.exit(1)
    print(
        f"probe: OK {result.url}: {result.echoes} echoes in {1000 * result.seconds:.0f} ms "
        f"(attempt {result.attempts}); {result.describe_close()}"
    )


if __name__ == "__main__":
    main()
