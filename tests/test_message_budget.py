"""The per-connection budget of ``message`` events (``WS_LOG_MESSAGE_BURST``,
``WS_LOG_MESSAGE_RATE``): its decisions and the ``close`` event's count of
what it left out.

The handler checks the budget with one comparison per message
(``now >= due``) and touches it only for a message it logs; these tests
hold it to the token bucket it replaced (``_Reference``: the clock read,
the tokens refilled and counted for every message), and check the
``close`` event of a real server process."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect

from server.events import MessageLogBudget

from .conftest import ServerProcess


class _Reference:
    """The token bucket as it was: refilled and checked on every message,
    counting what it leaves out."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(max(burst, 1))
        self.tokens = self.burst
        self.stamp = now
        self.skipped = 0
        self.skipped_bytes = 0

    def allow(self, now: float, size: int) -> bool:
        if not self.rate:
            return True
        tokens = self.tokens + (now - self.stamp) * self.rate
        self.stamp = now
        if tokens >= 1.0:
            self.tokens = min(tokens, self.burst) - 1.0
            return True
        self.tokens = tokens
        self.skipped += 1
        self.skipped_bytes += size
        return False


#: Rates and steps that are binary fractions, from a clock at a power of
#: two: every sum and quotient below is exact, so the two buckets meet each
#: boundary alike (with 10/s and 0.1 s steps, one rounding put the refilled
#: token a hair under 1.0 in one and the due time a hair under now in the other).
_RATES = [0.0, 0.5, 1.0, 8.0, 1024.0]
_STEPS = [0.0, 1 / 1024, 1 / 128, 1 / 8, 3 / 8, 1.0, 5.0]


@settings(max_examples=300, deadline=None)
@given(
    rate=st.sampled_from(_RATES),
    burst=st.integers(1, 20),
    steps=st.lists(st.tuples(st.sampled_from(_STEPS), st.integers(0, 9999)), max_size=200),
)
def test_the_budget_decides_and_counts_as_the_token_bucket(
    rate: float, burst: int, steps: list[tuple[float, int]]
) -> None:
    budget = MessageLogBudget(rate, burst)
    now = budget.stamp = 4096.0
    reference = _Reference(rate, burst, now)
    messages = total = 0
    for elapsed, size in steps:
        now += elapsed
        messages += 1
        total += size
        logged = now >= budget.due
        if logged:
            budget.spend(now, size)
        assert logged == reference.allow(now, size), (now, budget.due)
    expected = {}
    if reference.skipped:
        expected["messages_unlogged"] = reference.skipped
        expected["bytes_unlogged"] = reference.skipped_bytes
    assert budget.summary(messages, total) == expected


def test_the_close_event_counts_the_messages_left_out(
    server_process: type[ServerProcess],
) -> None:
    """A burst of 5 and a slow rate: of 40 messages (text, some of it not
    ASCII, and binary), the ``message`` lines and the close event's
    ``messages_unlogged`` and ``bytes_unlogged`` add up to what was sent."""
    server = server_process(env={"WS_LOG_MESSAGE_BURST": "5", "WS_LOG_MESSAGE_RATE": "0.01"})
    server.wait_ready()
    sent: list[str | bytes] = []
    for i in range(40):
        sent.append("\u00e9" * i if i % 3 == 0 else b"x" * (i * 7) if i % 3 == 1 else "a" * i)

    async def scenario() -> None:
        async with connect(server.ws_url) as ws:
            for message in sent:
                await ws.send(message)
                assert await ws.recv() == message

    asyncio.run(scenario())
    server.wait_event("close")
    logged = [d for d in server.log if d.get("event") == "message"]
    [close] = [d for d in server.log if d.get("event") == "close"]
    sizes = [len(m.encode()) if isinstance(m, str) else len(m) for m in sent]
    assert len(logged) == 5
    assert [d["size"] for d in logged] == sizes[:5]
    assert close["messages_in"] == 40
    assert close["messages_unlogged"] == 35
    assert close["bytes_unlogged"] == sum(sizes[5:])
