"""A hostile client at the HTTP edge of a real ``python -m server`` (issue
19, points 7-9): the connection cap under a burst of upgrades, client-made
text in Tornado's own log records, and log volume on one keep-alive
connection. Raw sockets on loopback; the server's own stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.events import FIELD_CHARS, TextFormatter

from .conftest import ROOT, ServerProcess
from .rawws import frame, upgrade_request
from .test_hostile import connect


def _status_and_headers(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers


def _read_head(sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n\r\n", 1)[0]


# -- 7: the connection cap under a burst ------------------------------------------


def test_a_burst_of_upgrades_never_exceeds_the_connection_cap(
    start_server: Callable[..., ServerProcess],
) -> None:
    """WS_MAX_CONNECTIONS=5 with 4 open: 30 upgrades sent together give
    exactly one 101 and 29 answers of 503 with Retry-After (all 30 got 101
    when the cap counted only connections already handed over). Once the
    burst is refused, the one that got in echoes and the cap still holds."""
    server = start_server(env={"WS_MAX_CONNECTIONS": "5"})
    burst = 30

    async def scenario() -> None:
        held = [await connect(server.port) for _ in range(4)]
        # Connected first (accepted, waiting for a request head), then the
        # 30 heads written back to back: they arrive in one loop turn.
        socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(burst)]
        try:
            await asyncio.sleep(0.2)
            for sock in socks:
                sock.sendall(upgrade_request())
            answers = [_status_and_headers(_read_head(sock)) for sock in socks]
            statuses = sorted(status for status, _ in answers)
            assert statuses == [101] + [503] * (burst - 1), statuses
            for status, headers in answers:
                if status == 503:
                    assert headers.get("retry-after") == "1", headers
            # The one that got in echoes; one more is refused: the cap is full.
            [winner] = [s for s, (status, _) in zip(socks, answers, strict=True) if status == 101]
            winner.sendall(frame(0x1, b"in"))
            assert winner.recv(64)[2:] == b"in"
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(upgrade_request())
            assert _status_and_headers(await reader.readuntil(b"\r\n\r\n"))[0] == 503
            writer.close()
            await writer.wait_closed()
        finally:
            for sock in socks:
                sock.close()
            for ws in held:
                ws.close()
                await ws.writer.wait_closed()

    asyncio.run(scenario())
    # Every slot comes back: after they all left, 5 open again.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if b'"connections": 0' in server.get("/readyz")[1]:
            break
        time.sleep(0.05)

    async def five_again() -> None:
        again = [await connect(server.port) for _ in range(5)]
        for ws in again:
            ws.close()
            await ws.writer.wait_closed()

    asyncio.run(five_again())


# -- 8: client-made text in Tornado's own records, text format ------------------------

LOGFMT_SOURCE = ROOT / "tests" / "logfmt" / "main.go"


class Logfmt:
    """go-logfmt's decoder (the one Go kit and Grafana Loki's ``logfmt``
    stage use), built from Debian's package by scripts/setup.sh's Go: an
    independent reader of our text lines. One process; a line in, its
    key/value pairs out."""

    def __init__(self, workdir: Path) -> None:
        binary = workdir / "logfmt"
        env = {
            **os.environ,
            "GO111MODULE": "off",
            "GOPATH": "/usr/share/gocode",
            "GOCACHE": str(workdir / "cache"),
        }
        subprocess.run(
            ["go", "build", "-o", str(binary), str(LOGFMT_SOURCE)],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        self.proc = subprocess.Popen(
            [str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def parse(self, line: str) -> list[tuple[str, str]]:
        """The pairs of one line; AssertionError if it is not one valid record."""
        assert "\n" not in line.rstrip("\n"), line
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(line.rstrip("\n") + "\n")
        self.proc.stdin.flush()
        doc = json.loads(self.proc.stdout.readline())
        assert not doc.get("error"), (doc, line)
        return [(k, v) for k, v in doc["pairs"]]

    def close(self) -> None:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait(10)
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def logfmt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Logfmt]:
    reader = Logfmt(tmp_path_factory.mktemp("logfmt"))
    yield reader
    reader.close()


def _keys(pairs: list[tuple[str, str]]) -> list[str]:
    return [k for k, _ in pairs]


HOSTILE_HOSTS = [
    "a peer=6.6.6.6 event=close",
    'a" peer=6.6.6.6 x="',
    'a\\" peer=6.6.6.6',
    "a\tpeer=6.6.6.6",
]


def test_tornado_records_in_text_format_carry_no_client_fields(
    start_server: Callable[..., ServerProcess], logfmt: Logfmt
) -> None:
    """``Host: a peer=6.6.6.6 event=close`` makes Tornado log ``Invalid Host
    header: 'a peer=6.6.6.6 event=close'``. In the text format every line a
    logfmt reader gets is one record whose fields are the server's: time,
    level, the event ``log``, ``logger`` and ``msg`` holding the whole
    message (it was the head of the line, and a reader took ``peer=6.6.6.6``
    from it)."""
    server = start_server(env={"WS_LOG_FORMAT": "text"})
    for host in HOSTILE_HOSTS:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(upgrade_request(host=host))
            status, _ = _status_and_headers(_read_head(sock))
            assert status == 400
    server.settle(0.5)
    malformed = [line for line in server.lines if "Invalid Host header" in line]
    assert len(malformed) == len(HOSTILE_HOSTS), server.lines
    for line in server.lines:
        pairs = logfmt.parse(line)
        assert ("peer", "6.6.6.6") not in pairs, line
    for line, host in zip(malformed, HOSTILE_HOSTS, strict=True):
        pairs = logfmt.parse(line)
        assert _keys(pairs)[2:] == ["log", "logger", "msg"], pairs
        assert pairs[3] == ("logger", "tornado.general")
        assert pairs[4][1].endswith(f"Invalid Host header: {host!r}"), (pairs, host)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300), name=st.sampled_from(["tornado.general", "tornado.access"]))
def test_any_message_of_another_logger_is_one_quoted_field(
    logfmt: Logfmt, text: str, name: str
) -> None:
    """Arbitrary text in a record of another logger (as a Host header or
    request line reaches Tornado's messages): go-logfmt reads exactly the
    server's fields, and ``msg`` gives back the message (cut at 256
    characters)."""
    record = logging.LogRecord(
        name, logging.WARNING, __file__, 1, "Invalid Host: %s", (text,), None
    )
    line = TextFormatter().format(record)
    pairs = logfmt.parse(line)
    assert _keys(pairs)[1:] == ["WARNING", "log", "logger", "msg"], (pairs, line)
    assert pairs[3][1] == name
    message = f"Invalid Host: {text}"
    expected = message if len(message) <= FIELD_CHARS else message[: FIELD_CHARS - 3] + "..."
    assert pairs[4][1] == expected


def test_a_traceback_in_text_format_is_one_escaped_field(logfmt: Logfmt) -> None:
    """A traceback whose exception message a client wrote (Tornado's
    ``Invalid header value`` does) stays inside the ``exception`` field."""
    try:
        raise ValueError("bad value\npeer=6.6.6.6 event=close")
    except ValueError:
        record = logging.LogRecord(
            "tornado.application", logging.ERROR, __file__, 1, "Uncaught", (), sys.exc_info()
        )
    line = TextFormatter().format(record)
    pairs = logfmt.parse(line)
    assert _keys(pairs)[1:] == ["ERROR", "log", "logger", "msg", "exception"], pairs
    assert pairs[5][1].endswith("ValueError: bad value\npeer=6.6.6.6 event=close")


# -- 9: log volume on one keep-alive connection ----------------------------------------


def _read_all(sock: socket.socket, until: Any, timeout: float = 20.0) -> bytes:
    """Read until ``until(data)`` or EOF."""
    sock.settimeout(timeout)
    data = b""
    while not until(data):
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        data += chunk
    return data


def test_pipelined_refused_upgrades_get_one_answer_and_one_line(
    start_server: Callable[..., ServerProcess],
) -> None:
    """2,000 upgrades without a key, pipelined on one connection: one 400
    with ``Connection: close``, then the server closes; one ``error`` line
    (there were 2,000: 1.3 MiB of log a second)."""
    server = start_server()
    bad = upgrade_request(Sec_WebSocket_Key=None)  # type: ignore[arg-type]
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(bad * 2000)
        data = _read_all(sock, lambda d: False)  # to EOF: the server closes
    assert data.count(b"HTTP/1.1 ") == 1, data[:300]
    status, headers = _status_and_headers(data.split(b"\r\n\r\n", 1)[0])
    assert status == 400
    assert headers["connection"] == "close", headers
    server.settle(0.5)
    # Every line but the start's "listening" (which may reach us late).
    new = [line for line in server.lines if '"event": "listening"' not in line]
    assert [e["kind"] for e in server.events("error")] == ["bad_handshake"], new
    assert len(new) == 1, new
    assert len(new[0]) < 1024, new


def test_pipelined_404s_log_a_bounded_number_of_lines_with_counts(
    start_server: Callable[..., ServerProcess],
) -> None:
    """1,000 pipelined 404s on one keep-alive connection are all answered;
    their ``request`` lines stop after 10 (then 1 a second), and the next
    one logged says how many were left out (they made 392 KiB of log)."""
    server = start_server()
    before_bytes = server.bytes
    request = b"GET /nothing-here HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(request * 1000)
        data = _read_all(sock, lambda d: d.count(b"HTTP/1.1 404 ") >= 1000)
    assert data.count(b"HTTP/1.1 404 ") == 1000
    server.settle(1.2)
    logged = [e for e in server.events("request") if e["path"] == "/nothing-here"]
    elapsed_allowance = 10 + 5  # 10 at once, then 1 a second for a few seconds at most
    assert 10 <= len(logged) <= elapsed_allowance, len(logged)
    assert server.bytes - before_bytes < 10 * 1024, server.bytes - before_bytes
    # One more request, on a new connection: logged, with the count left out.
    assert urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=5).status == 200
    server.settle(0.5)
    requests = server.events("request")
    assert requests[-1]["path"] == "/", requests[-1]
    counted = len(logged) + sum(e.get("unlogged", 0) for e in requests)
    assert counted == 1000, (len(logged), requests[-1])


async def _head_status(port: int, request: bytes) -> int:
    """The status of one raw request on its own connection, then closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    status = _status_and_headers(await reader.readuntil(b"\r\n\r\n"))[0]
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    return status


def _flood_then_one_more(
    server: ServerProcess,
    flood: bytes,
    late: bytes,
    status: int,
    lines: Callable[[], list[dict[str, Any]]],
) -> list[dict[str, Any]]:
    """300 connections at once, each sending ``flood``, then one more
    sending ``late``, each answered with ``status``. During the flood the
    server logs at most 100 ``lines()`` at once and then 10 a second; what
    it leaves out is told in ``unlogged`` on the next line logged after
    it (the late one, or one logged during a slow flood): each of the 301
    is a line or counted. Returns the lines, the late one last."""

    async def requests(request: bytes, n: int) -> None:
        statuses = await asyncio.gather(*(_head_status(server.port, request) for _ in range(n)))
        assert set(statuses) == {status}

    started = time.monotonic()
    asyncio.run(requests(flood, 300))
    elapsed = time.monotonic() - started
    server.settle(1.2)
    assert 100 <= len(lines()) <= 100 + 10 * (elapsed + 1.5), (len(lines()), elapsed)
    asyncio.run(requests(late, 1))
    server.settle(0.5)
    logged = lines()
    assert any(e.get("unlogged", 0) > 0 for e in logged[100:]), logged[100:]
    assert len(logged) + sum(e.get("unlogged", 0) for e in logged) == 301
    return logged


def test_refusals_from_many_connections_are_logged_within_a_budget(
    start_server: Callable[..., ServerProcess],
) -> None:
    """300 connections, each refused (403: a foreign origin), then one
    more: logged within the budget (``_flood_then_one_more``), every
    refusal counted in ``websocket_handshakes_rejected_total``."""
    server = start_server()
    logged = _flood_then_one_more(
        server,
        upgrade_request(Origin="http://evil.example"),
        upgrade_request(Origin="http://late.example"),
        403,
        lambda: [e for e in server.events("error") if e["kind"] == "origin_rejected"],
    )
    assert logged[-1]["origin"] == "http://late.example"
    text = server.get("/metrics")[1].decode()
    assert 'websocket_handshakes_rejected_total{reason="origin_rejected"} 301.0' in text


@pytest.fixture(scope="module")
def text_server() -> Iterator[ServerProcess]:
    server = ServerProcess(env={"WS_PING_INTERVAL": "0", "WS_LOG_FORMAT": "text"})
    server.wait_ready(15.0)
    deadline = time.monotonic() + 10
    while not any(" listening " in line for line in server.lines):
        assert time.monotonic() < deadline, server.lines
        time.sleep(0.01)
    yield server
    server.stop()


#: The fields of the lines an upgrade refused for its Host header can make.
_EDGE_FIELDS = {
    "log": ["logger", "msg"],
    "error": ["kind", "detail", "status", "peer"],
}


@settings(max_examples=60, deadline=None)
@given(
    host=st.text(
        alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
        max_size=120,
    )
)
def test_any_host_header_gives_lines_with_only_the_servers_fields(
    text_server: ServerProcess, logfmt: Logfmt, host: str
) -> None:
    """Any Host header (latin-1 text) on an upgrade without a key, against
    the real server in text format: whether Tornado rejects the header (a
    ``log`` line) or the server refuses the upgrade (an ``error`` line),
    go-logfmt reads only the server's fields from what is logged."""
    before = len(text_server.lines)
    request = upgrade_request(host="HOST", Sec_WebSocket_Key=None)  # type: ignore[arg-type]
    with socket.create_connection(("127.0.0.1", text_server.port)) as sock:
        sock.sendall(request.replace(b"Host: HOST", b"Host: " + host.encode("latin-1")))
        assert _read_all(sock, lambda d: False, timeout=5).startswith(b"HTTP/1.1 400 ")
    deadline = time.monotonic() + 5
    while len(text_server.lines) == before and time.monotonic() < deadline:
        time.sleep(0.01)
    new = text_server.lines[before:]
    assert len(new) == 1, new
    pairs = logfmt.parse(new[0])
    event = _keys(pairs)[2]
    assert _keys(pairs)[3:] == _EDGE_FIELDS[event], (pairs, host)


def test_tornado_records_from_many_connections_are_logged_within_a_budget(
    start_server: Callable[..., ServerProcess],
) -> None:
    """300 connections, each with a Host header Tornado rejects (400, and one
    ``Malformed HTTP message`` record each), then one more: its ``log``
    lines within the budget (``_flood_then_one_more``)."""
    server = start_server()
    logged = _flood_then_one_more(
        server,
        upgrade_request(host="a b"),
        upgrade_request(host="late one"),
        400,
        lambda: server.events("log"),
    )
    assert "'late one'" in logged[-1]["msg"]


def test_oversized_heads_from_many_connections_are_logged_within_a_budget(
    start_server: Callable[..., ServerProcess],
) -> None:
    """300 connections, each with a request head over 16 KiB (431), then
    one more: ``headers_too_large`` lines within the budget
    (``_flood_then_one_more``), every one counted in
    ``websocket_handshakes_rejected_total``."""
    server = start_server()
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 17000 + b"\r\n\r\n"
    _flood_then_one_more(
        server,
        head,
        head,
        431,
        lambda: [e for e in server.events("error") if e["kind"] == "headers_too_large"],
    )
    text = server.get("/metrics")[1].decode()
    assert 'websocket_handshakes_rejected_total{reason="headers_too_large"} 301.0' in text
