"""A deliberately minimal WebSocket client over a raw TCP stream.

Real client libraries refuse to send what these tests need to send: unmasked
frames, reserved bits, unknown opcodes, invalid close codes, broken
handshakes. This speaks just enough RFC 6455 to do that and to read the
server's answer.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from dataclasses import dataclass

from testkit.frames import frame

__all__ = [
    "Frame",
    "RawWebSocket",
    "frame",
    "http_request",
    "small_window_socket",
    "stalled_client",
    "stalled_client_in_loop",
]


@dataclass
class Frame:
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def close_reason(self) -> str:
        return self.payload[2:].decode("utf-8", "replace")


async def http_request(
    port: int, request: bytes, host: str = "127.0.0.1"
) -> tuple[int, dict[str, str], bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    """Send raw request bytes; return status, headers, body (if sized) and the stream."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    body = b""
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    return status, headers, body, reader, writer


def upgrade_request(path: str = "/ws", host: str = "127.0.0.1", **extra: str) -> bytes:
    headers = {
        "Host": host,
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }
    for k, v in extra.items():
        name = k.replace("_", "-")
        if v is None:
            headers.pop(name, None)
        else:
            headers[name] = v
    lines = [f"GET {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items() if v is not None]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def small_window_socket(port: int, rcvbuf: int = 4096, host: str = "127.0.0.1") -> socket.socket:
    """A connected, blocking TCP socket whose receive buffer (``rcvbuf``) was
    set before connecting: the window is agreed at the handshake, so it
    stays small (set afterwards, on loopback, the server's large segments
    no longer fit and the connection stalls for minutes)."""
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.connect((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def stalled_client(port: int, path: str = "/ws", rcvbuf: int = 4096) -> socket.socket:
    """A client of a server in another process that reads its 101 and then
    nothing: a small receive window (``small_window_socket``). The caller
    closes it."""
    sock = small_window_socket(port, rcvbuf)
    sock.sendall(upgrade_request(path))
    assert sock.recv(256).startswith(b"HTTP/1.1 101")
    return sock


async def stalled_client_in_loop(port: int, path: str = "/ws", rcvbuf: int = 4096) -> socket.socket:
    """``stalled_client`` for a server on the running event loop: a
    non-blocking socket, the handshake awaited. The caller closes it."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, upgrade_request(path))
        assert (await loop.sock_recv(sock, 256)).startswith(b"HTTP/1.1 101")
    except BaseException:
        sock.close()
        raise
    return sock


class RawWebSocket:
    """An upgraded connection that sends whatever bytes a test gives it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, path: str = "/ws") -> RawWebSocket:
        status, _, _, reader, writer = await http_request(port, upgrade_request(path))
        assert status == 101, status
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self, timeout: float = 5.0) -> Frame:
        async def read() -> Frame:
            b0, b1 = await self.reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            assert not b1 & 0x80, "server frames must not be masked"
            return Frame(b0 & 0x0F, await self.reader.readexactly(n))

        return await asyncio.wait_for(read(), timeout)

    async def recv_close(self, timeout: float = 5.0) -> Frame:
        """Skip data/ping frames until the close frame."""
        while True:
            f = await self.recv(timeout)
            if f.opcode == 0x8:
                return f

    async def at_eof(self, timeout: float = 5.0) -> bool:
        """True once the server has closed the TCP connection."""
        try:
            while await asyncio.wait_for(self.reader.read(65536), timeout):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            return True
        return True

    def close(self) -> None:
        self.writer.close()
