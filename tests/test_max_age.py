"""``WS_MAX_CONNECTION_AGE``: every connection is closed with 1001 "max
connection age" before its age, at a jittered moment, after what it had
sent was echoed - through real sockets, in process and in a subprocess."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from server.connections import MAX_AGE_REASON, MaxAge
from server.metrics import Metrics

from .conftest import ServerProcess, events, recv_until_closed, until

AGE = 3.0


def test_each_deadline_is_in_the_last_tenth_of_the_age() -> None:
    age = MaxAge(100.0)
    assert age.deadline(0.0) == 100.0
    assert age.deadline(0.5) == pytest.approx(95.0)
    assert 90.0 < age.deadline(0.999999) < 90.001


@given(
    st.floats(min_value=1, max_value=31 * 86400),
    st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_no_deadline_is_after_the_age_or_before_its_last_tenth(age: float, draw: float) -> None:
    deadline = MaxAge(age).deadline(draw)
    assert 0.9 * age <= deadline <= age


async def _open_and_wait(ws_url: str) -> tuple[float, int | None, str | None, list[str | bytes]]:
    """Open a connection, wait for the server to close it; the seconds it
    lived (from the client's side of the handshake), its close code and
    reason, and what it received."""
    ws = await connect(ws_url)
    opened = time.monotonic()
    received = await recv_until_closed(ws)
    lived = time.monotonic() - opened
    await ws.wait_closed()
    return lived, ws.close_code, ws.close_reason, received


@pytest.mark.settings(max_connection_age=AGE)
async def test_connections_opened_together_close_apart_before_their_age(
    ws_url: str, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    """Eight connections opened at once are closed with 1001 and the reason
    "max connection age", each at a moment in the last tenth of the age:
    not all at once, and none after the age. The close event says why
    (cause max_age) and the metric counts them."""
    results = await asyncio.wait_for(
        asyncio.gather(*(_open_and_wait(ws_url) for _ in range(8))), AGE + 5
    )
    lived = sorted(r[0] for r in results)
    assert {(code, reason) for _, code, reason, _ in results} == {(1001, MAX_AGE_REASON)}
    # The client's clock starts after the server's (by the handshake's last
    # trip), and the close frame is sent no later than the age (plus a
    # drain tick and the loopback trip): 0.2 s of slack for a busy machine.
    assert lived[0] >= 0.9 * AGE - 0.2, lived
    assert lived[-1] <= AGE + 0.2, lived
    assert lived[-1] - lived[0] > 0.05, f"closed together: {lived}"
    await until(lambda: len(events(caplog, "close")) == 8)
    closes = events(caplog, "close")
    assert {(c["code"], c["cause"]) for c in closes} == {(1001, "max_age")}
    assert metrics.closed_by_cause.labels("max_age").value == 8
    assert metrics.connections_closed.labels("1001").value == 8


@pytest.mark.settings(max_connection_age=AGE)
async def test_a_message_in_flight_at_the_deadline_is_echoed_before_the_close(
    ws_url: str,
) -> None:
    """Each client sends a message in two fragments: the first long before
    its age, the second inside the window the deadlines are drawn from.
    Connections whose deadline falls between the two wait for the message
    to be complete and echoed, then get their 1001."""

    async def fragments(opened: float) -> AsyncIterator[str]:
        yield "first half, "
        await asyncio.sleep(max(0.0, opened + 0.95 * AGE - time.monotonic()))
        yield "second half"

    async def one() -> tuple[int | None, str | None, list[str | bytes]]:
        ws = await connect(ws_url)
        opened = time.monotonic()
        await asyncio.sleep(0.5)
        await ws.send(fragments(opened))
        received = await recv_until_closed(ws)
        return ws.close_code, ws.close_reason, received

    results = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(6))), AGE + 5)
    for code, reason, received in results:
        assert received == ["first half, second half"]
        assert (code, reason) == (1001, MAX_AGE_REASON)


async def test_off_by_default(ws_url: str) -> None:
    async with connect(ws_url) as ws:
        await asyncio.sleep(1.2)
        await ws.send("still here")
        assert await ws.recv() == "still here"


@pytest.mark.settings(max_connection_age=AGE)
async def test_a_client_that_never_pauses_is_closed_at_its_age(ws_url: str) -> None:
    """A client always in the middle of a message (here: a fragmented one
    it never finishes) is closed at the full age, not held open."""

    async def never_done() -> AsyncIterator[str]:
        while True:
            yield "x"
            await asyncio.sleep(0.005)

    ws = await connect(ws_url)
    opened = time.monotonic()
    sending = asyncio.ensure_future(ws.send(never_done()))
    try:
        await asyncio.wait_for(ws.wait_closed(), AGE + 3)
    finally:
        sending.cancel()
        with pytest.raises((asyncio.CancelledError, ConnectionClosed)):
            await sending
    assert ws.close_code == 1001
    assert 0.9 * AGE - 0.2 <= time.monotonic() - opened <= AGE + 0.3


def test_env_variable_sets_the_age(server_process: type[ServerProcess]) -> None:
    """``WS_MAX_CONNECTION_AGE`` through a real process: the close event
    carries code, reason and cause."""
    server = server_process(env={"WS_MAX_CONNECTION_AGE": "1.5"})
    server.wait_ready()
    assert server.wait_event("listening")["max_connection_age"] == 1.5
    lived, code, reason, _ = asyncio.run(_open_and_wait(server.ws_url))
    assert (code, reason) == (1001, MAX_AGE_REASON)
    assert 1.35 - 0.2 <= lived <= 1.5 + 0.2
    close = server.wait_event("close")
    assert close["cause"] == "max_age"
    assert close["code"] == 1001
