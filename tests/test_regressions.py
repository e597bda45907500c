"""Regression tests for the defects the core redesign fixed (issue 10),
each through a real socket against the in-process server: what a hostile
or careful client found when the server was built on Tornado's own frame
loop."""

from __future__ import annotations

import asyncio
import socket
import zlib

import pytest
from websockets.asyncio.client import connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

from testkit.frames import close_payload, frame_head

from .conftest import events, until
from .rawws import Frame, RawWebSocket, frame, http_request, upgrade_request

TAIL = b"\x00\x00\xff\xff"


def deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(TAIL)
    return out[:-4]


async def deflate_client(port: int, offer: str) -> tuple[RawWebSocket, str]:
    status, headers, _, reader, writer = await http_request(
        port, upgrade_request(Sec_WebSocket_Extensions=offer)
    )
    assert status == 101
    return RawWebSocket(reader, writer), headers.get("sec-websocket-extensions", "")


@pytest.mark.settings(compression=True)
async def test_compressed_message_with_a_ping_between_its_fragments(port: int) -> None:
    """Was: the control frame reset the 'compressed' flag, so the message's
    second fragment was not inflated: a corrupted echo or a false 1007."""
    raw, accepted = await deflate_client(port, "permessage-deflate")
    assert accepted.startswith("permessage-deflate")
    text = ("fragmented, compressed, and interrupted by a ping " * 20).encode()
    data = deflate(text)
    half = len(data) // 2
    await raw.send(
        frame(0x1, data[:half], fin=False, rsv=0x40)
        + frame(0x9, b"are you there")
        + frame(0x0, data[half:], fin=True)
    )
    pong = await raw.recv()
    assert (pong.opcode, pong.payload) == (0xA, b"are you there")
    echo = await raw.recv()
    assert echo.opcode == 0x1
    assert zlib.decompressobj(wbits=-15).decompress(echo.payload + TAIL) == text
    raw.close()


@pytest.mark.settings(compression=True)
async def test_rsv1_on_a_control_frame_fails_with_1002(port: int) -> None:
    """RFC 7692 6.1: RSV1 only marks a data message's first frame."""
    raw, _ = await deflate_client(port, "permessage-deflate")
    await raw.send(frame(0x9, b"x", rsv=0x40))
    close = await raw.recv_close()
    assert close.close_code == 1002
    raw.close()


async def test_64_bit_length_with_its_top_bit_set_fails_with_1002(port: int) -> None:
    """RFC 6455 5.2: the most significant bit must be 0. Was: 1009."""
    raw = await RawWebSocket.connect(port)
    await raw.send(frame_head(0x2, 1 << 63, mask=b"mask"))
    close = await raw.recv_close()
    assert close.close_code == 1002
    raw.close()


@pytest.mark.settings(compression=True)
@pytest.mark.parametrize(
    "offer",
    [
        "permessage-deflate; server_max_window_bits=8",
        "permessage-deflate; client_max_window_bits=abc",
        "permessage-deflate; unknown_parameter=1",
        "permessage-deflate; server_no_context_takeover=yes",
        "permessage-deflate; server_max_window_bits",
        'permessage-deflate; server_max_window_bits="16"',
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; =broken",
    ],
)
async def test_invalid_deflate_offers_are_declined_not_a_500(
    port: int, offer: str, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 7692 5: an offer the server cannot accept is declined; the
    connection opens without compression. Was: HTTP 500 and a traceback."""
    raw, accepted = await deflate_client(port, offer)
    assert accepted == ""
    await raw.send(frame(0x1, b"plain"))
    echo = await raw.recv()
    assert (echo.opcode, echo.payload) == (0x1, b"plain")
    raw.close()
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


@pytest.mark.settings(compression=True)
async def test_a_later_valid_offer_is_taken_when_the_first_is_invalid(port: int) -> None:
    raw, accepted = await deflate_client(
        port, "permessage-deflate; server_max_window_bits=8, permessage-deflate"
    )
    assert accepted == "permessage-deflate"
    raw.close()


async def test_http_1_0_upgrade_gets_400(port: int) -> None:
    """RFC 6455 4.1: the handshake is HTTP/1.1. Was: 101, then a drop."""
    request = upgrade_request().replace(b"HTTP/1.1", b"HTTP/1.0", 1)
    status, _, body, _, writer = await http_request(port, request)
    assert status == 400
    assert b"HTTP/1.1" in body
    writer.close()


@pytest.mark.settings(compression=True)
async def test_server_no_context_takeover_is_accepted_and_honoured(port: int) -> None:
    """RFC 7692 7.1.1.1: accept by echoing the parameter, then compress
    each message alone. Was: answered with plain permessage-deflate, and
    the context kept."""
    raw, accepted = await deflate_client(port, "permessage-deflate; server_no_context_takeover")
    assert accepted == "permessage-deflate; server_no_context_takeover"
    text = b"the same words twice " * 10
    for _ in range(2):
        await raw.send(frame(0x1, deflate(text), rsv=0x40))
        echo = await raw.recv()
        # A fresh inflater for each message: no context from the last one.
        assert zlib.decompressobj(wbits=-15).decompress(echo.payload + TAIL) == text
    raw.close()


@pytest.mark.settings(compression=True)
async def test_websockets_client_asking_for_server_no_context_takeover_connects(
    ws_url: str,
) -> None:
    factory = ClientPerMessageDeflateFactory(server_no_context_takeover=True)
    async with connect(ws_url, extensions=[factory], compression=None) as ws:
        for _ in range(3):
            await ws.send("compress me " * 50)
            assert await ws.recv() == "compress me " * 50


async def test_frames_that_arrive_with_the_clients_fin_are_handled(port: int) -> None:
    """Every message the server read is echoed, and a bad one is answered,
    even when the client half-closes right behind them. Was: nothing back
    in 18 of 20 tries."""
    for _ in range(20):
        raw = await RawWebSocket.connect(port)
        raw.writer.write(frame(0x2, b"hello") + frame(0x1, b"\xff\xfe"))
        await raw.writer.drain()
        sock = raw.writer.get_extra_info("socket")
        sock.shutdown(socket.SHUT_WR)
        echo = await raw.recv()
        assert (echo.opcode, echo.payload) == (0x2, b"hello")
        close = await raw.recv()
        assert (close.opcode, close.close_code) == (0x8, 1007)
        assert await raw.at_eof()
        raw.close()


async def _read_all(raw: RawWebSocket) -> tuple[list[Frame], bool]:
    """Every frame until the server's FIN; True if the end was a reset."""
    frames = []
    try:
        while True:
            frames.append(await raw.recv())
    except asyncio.IncompleteReadError:
        return frames, False
    except ConnectionResetError:
        return frames, True


async def test_data_after_the_clients_close_frame_is_discarded_without_a_reset(
    port: int,
) -> None:
    """RFC 6455 5.5.1: nothing follows a close frame; a server that resets
    the connection on such bytes can destroy its own close reply and last
    echoes. Was: a reset."""
    for _ in range(10):
        raw = await RawWebSocket.connect(port)
        await raw.send(
            frame(0x1, b"last words")
            + frame(0x8, close_payload(1000))
            + frame(0x1, b"after the close") * 50
        )
        frames, reset = await _read_all(raw)
        assert not reset
        assert [(f.opcode, f.payload) for f in frames] == [
            (0x1, b"last words"),
            (0x8, close_payload(1000)),
        ]
        raw.close()


@pytest.mark.settings(ping_interval=0.4, ping_timeout=0.3, send_timeout=10.0)
async def test_slow_steady_reader_under_backpressure_is_not_failed_by_keepalive(
    port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that sends a burst and then reads its echoes slowly: its
    reading is paused for backpressure (so its pongs cannot be read), and
    keepalive must not fail it with 1011; pings come ahead of the queued
    echoes. Was: 1011 "no pong", or a reset."""
    raw = await RawWebSocket.connect(port)
    # A small receive window, so that the kernel buffers fill and the
    # server's own backlog (and its backpressure) is reached.
    raw.writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    payload = b"x" * 65536
    count = 120  # 7.5 MiB of echoes: past the kernel's buffers and the 1 MiB high-water mark
    sender = asyncio.ensure_future(raw.send(frame(0x2, payload) * count))
    echoes = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while echoes < count and loop.time() < deadline:
        f = await raw.recv(timeout=10)
        if f.opcode == 0x9:
            await raw.send(frame(0xA, f.payload))
            continue
        assert f.opcode == 0x2, (f.opcode, f.close_code, f.close_reason)
        echoes += 1
        await asyncio.sleep(0.02)  # about 3 MB/s: several ping intervals in all
    await sender
    assert echoes == count
    await raw.send(frame(0x8, close_payload(1000)))
    close = await raw.recv()
    while close.opcode == 0x9:  # a ping on its way before our close frame
        close = await raw.recv()
    assert (close.opcode, close.close_code) == (0x8, 1000)
    raw.close()
    await until(lambda: bool(events(caplog, "close")))
    assert not [e for e in events(caplog, "error") if e["kind"] == "ping_timeout"]
