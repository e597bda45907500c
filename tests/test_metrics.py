"""``/metrics``: Prometheus text that moves with the traffic."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import AsyncHTTPClient
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from server import exposition
from server.echo import EchoWebSocket
from server.metrics import Counter, Gauge, Histogram, LabelledCounter, Metrics
from server.podstate import PodState, Worker
from testkit.metrics import Samples, parse, sample

from .conftest import ServerProcess, events, until
from .rawws import RawWebSocket


async def scrape(port: int) -> Samples:
    response = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/metrics")
    assert response.headers["Content-Type"].startswith("text/plain")
    return parse(response.body.decode())


class _ClosesOnMessage(EchoWebSocket):
    """Closes the connection itself when a message says so."""

    def on_message(self, message: str | bytes) -> None:
        if message == "close":
            self.close(4001, "closed by the app")
        else:
            super().on_message(message)


@pytest.mark.handler.with_args(_ClosesOnMessage)
async def test_close_cause_says_what_ended_the_connection(
    port: int, ws_url: str, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    """The ``close`` event's ``cause`` and the by-cause counter: the
    handler's own close (app), a client's close frame (client), a TCP
    connection that ends without one (dropped)."""
    async with connect(ws_url) as ws:
        await ws.send("close")
        await ws.wait_closed()
    assert (ws.close_code, ws.close_reason) == (4001, "closed by the app")
    async with connect(ws_url) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
    raw = await RawWebSocket.connect(port)
    raw.close()  # no close frame
    await until(lambda: len(events(caplog, "close")) == 3)
    assert [c["cause"] for c in events(caplog, "close")] == ["app", "client", "dropped"]
    by_cause = {k: c.value for k, c in metrics.closed_by_cause.children.items()}
    assert by_cause == {
        "client": 1,
        "dropped": 1,
        "error": 0,
        "slow_consumer": 0,
        "app": 1,
        "max_age": 0,
        "drain": 0,
    }


@pytest.mark.settings(max_message_bytes=100)
async def test_metrics_follow_connections_messages_and_errors(port: int, ws_url: str) -> None:
    before = await scrape(port)
    assert sample(before, "websocket_open_connections") == 0

    async with connect(ws_url) as ws:
        await ws.send("hello")  # 5 bytes
        await ws.recv()
        await ws.send(b"\x00" * 10)
        await ws.recv()
        during = await scrape(port)
        assert sample(during, "websocket_open_connections") == 1
        assert sample(during, "websocket_connections_opened_total") == 1
        assert sample(during, "websocket_messages_received_total", type="text") == 1
        assert sample(during, "websocket_messages_received_total", type="binary") == 1
        assert sample(during, "websocket_messages_sent_total", type="text") == 1
        assert sample(during, "websocket_received_bytes_total", type="text") == 5
        assert sample(during, "websocket_sent_bytes_total", type="binary") == 10

    async with connect(ws_url) as big:
        await big.send(b"x" * 101)
        with pytest.raises(ConnectionClosedError):
            await big.recv()
    with pytest.raises(InvalidStatus):
        await connect(ws_url, origin="https://elsewhere.example")  # type: ignore[arg-type]

    for _ in range(100):  # the server counts the close just after the client sees it
        after = await scrape(port)
        if sample(after, "websocket_connections_closed_total", code="1009", missing=0):
            break
        await asyncio.sleep(0.02)
    assert sample(after, "websocket_open_connections") == 0
    assert sample(after, "websocket_connections_closed_total", code="1000") == 1
    assert sample(after, "websocket_connections_closed_total", code="1009") == 1
    assert sample(after, "websocket_connections_closed_by_cause_total", cause="client") == 1
    assert sample(after, "websocket_connections_closed_by_cause_total", cause="error") == 1
    assert sample(after, "websocket_connections_closed_by_cause_total", cause="max_age") == 0
    assert sample(after, "websocket_errors_total", kind="message_too_big") == 1
    assert sample(after, "websocket_errors_total", kind="origin_rejected") == 1
    assert sample(after, "websocket_handshakes_rejected_total", reason="origin_rejected") == 1
    assert sample(after, "websocket_connection_duration_seconds_count") == 2


# -- the numbers against prometheus_client's own types ---------------------------

ROOT = Path(__file__).resolve().parent.parent


def _reference(metrics: Metrics) -> tuple[prometheus_client.CollectorRegistry, dict[str, Any]]:
    """prometheus_client's own Counter, Gauge and Histogram, named as ours."""
    registry = prometheus_client.CollectorRegistry()
    made: dict[str, Any] = {}
    for series in metrics.series:
        if isinstance(series, Gauge):
            made[series.name] = prometheus_client.Gauge(series.name, series.doc, registry=registry)
        elif isinstance(series, Counter):
            made[series.name] = prometheus_client.Counter(
                series.name, series.doc, registry=registry
            )
        elif isinstance(series, LabelledCounter):
            counter = prometheus_client.Counter(
                series.name, series.doc, [series.label], registry=registry
            )
            for value in series.children:
                counter.labels(value)
            made[series.name] = counter
        elif isinstance(series, Histogram):
            made[series.name] = prometheus_client.Histogram(
                series.name, series.doc, buckets=series.bounds, registry=registry
            )
    return registry, made


def _samples(
    text: str, names: set[str]
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float | None]:
    """Every sample of the families in ``names`` and of their ``_created``
    families (which are there, not their times: those differ)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): (
            None if s.name.endswith("_created") else s.value
        )
        for family in text_string_to_metric_families(text)
        if family.name in names or family.name.removesuffix("_created") in names
        for s in family.samples
    }


_operation = st.one_of(
    st.tuples(st.just("gauge"), st.sampled_from(["inc", "dec"])),
    st.tuples(st.just("opened"), st.just("inc")),
    st.tuples(st.just("closed"), st.one_of(st.integers(0, 70000), st.text(max_size=5))),
    st.tuples(st.just("errors"), st.text(max_size=20)),
    st.tuples(st.just("rejected"), st.sampled_from(["draining", "over_capacity", "x"])),
    st.tuples(st.just("accept"), st.sampled_from(["EMFILE", "ENOMEM", "EBADF"])),
    st.tuples(
        st.just("duration"),
        st.one_of(
            st.sampled_from([0.0, 0.1, 1.0, 5.0, 3600.0, 3600.5]),
            st.floats(0, 10000, allow_nan=False),
        ),
    ),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_operation, max_size=40))
def test_scrape_matches_prometheus_client_for_any_sequence_of_events(
    operations: list[tuple[str, object]],
) -> None:
    """Our plain numbers, scraped, read the same as prometheus_client's own
    types fed the same events (the bucket edges included: an observation of
    exactly 1.0 counts in le="1.0"), with the same ``_created`` series; only
    their times differ."""
    ours = Metrics()
    reference, ref = _reference(ours)
    for kind, arg in operations:
        if kind == "gauge":
            getattr(ours.open_connections, str(arg))()
            getattr(ref["websocket_open_connections"], str(arg))()
        elif kind == "opened":
            ours.connections_opened.inc()
            ref["websocket_connections_opened"].inc()
        elif kind == "duration":
            ours.connection_duration.observe(float(arg))  # type: ignore[arg-type]
            ref["websocket_connection_duration_seconds"].observe(arg)
        else:
            ours_series, name = {
                "closed": (ours.connections_closed, "websocket_connections_closed"),
                "errors": (ours.errors, "websocket_errors"),
                "rejected": (ours.handshakes_rejected, "websocket_handshakes_rejected"),
                "accept": (ours.accept_errors, "websocket_accept_errors"),
            }[kind]
            child = ours_series.labels(arg)
            child.inc()
            # the reference is fed the label ours folded it into
            folded = next(v for v, c in ours_series.children.items() if c is child)
            ref[name].labels(folded).inc()
    names = {s.name for s in ours.series}
    assert _samples(exposition.render(ours).decode(), names) == _samples(
        prometheus_client.generate_latest(reference).decode(), names
    )


def test_starting_the_server_does_not_import_prometheus_client() -> None:
    """prometheus_client (with http.server and wsgiref) is imported at the
    first scrape or a second after listening, not in the start Knative's
    scale from zero waits on."""
    code = (
        "import sys, server.__main__, server.app\n"
        "print(sorted(m for m in ('prometheus_client', 'http.server', 'wsgiref')"
        " if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_created_series_can_be_turned_off_as_in_prometheus_client() -> None:
    """prometheus_client's switch for the ``_created`` series
    (``disable_created_metrics()``, which ``PROMETHEUS_DISABLE_CREATED_SERIES``
    sets at import) turns ours off too, as it did the library's own types."""
    ours = Metrics()
    reference, ref = _reference(ours)
    ours.connections_opened.inc()
    ref["websocket_connections_opened"].inc()
    ours.connection_duration.observe(2.0)
    ref["websocket_connection_duration_seconds"].observe(2.0)
    names = {s.name for s in ours.series}
    was_on = exposition._created_series()
    prometheus_client.disable_created_metrics()
    try:
        text = exposition.render(ours).decode()
        assert _samples(text, names) == _samples(
            prometheus_client.generate_latest(reference).decode(), names
        )
    finally:
        if was_on:
            prometheus_client.enable_created_metrics()
    assert "_created" not in text
    assert "websocket_connections_opened_total 1.0" in text
    if was_on:
        assert "websocket_connections_opened_created" in exposition.render(ours).decode()


def test_server_started_with_created_series_disabled_has_none(
    server_process: type[ServerProcess],
) -> None:
    """An operator's ``PROMETHEUS_DISABLE_CREATED_SERIES=True`` (read by
    prometheus_client at import, a second after start here) reaches a real
    server's ``/metrics``."""
    server = server_process(env={"PROMETHEUS_DISABLE_CREATED_SERIES": "True"})
    server.wait_ready()
    with urllib.request.urlopen(server.url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    assert "websocket_connections_opened_total 0.0" in text
    assert 'websocket_connection_duration_seconds_bucket{le="+Inf"} 0.0' in text
    assert "_created" not in text


def _apply(metrics: Metrics, kind: str, arg: object) -> None:
    if kind == "gauge":
        getattr(metrics.open_connections, str(arg))()
    elif kind == "opened":
        metrics.connections_opened.inc()
    elif kind == "duration":
        metrics.connection_duration.observe(float(arg))  # type: ignore[arg-type]
    elif kind == "message":
        binary = bool(arg)
        metrics.messages.messages_in[binary] += 1
        metrics.messages.bytes_in[binary] += 7
    else:
        series = {
            "closed": metrics.connections_closed,
            "errors": metrics.errors,
            "rejected": metrics.handshakes_rejected,
            "accept": metrics.accept_errors,
        }[kind]
        series.labels(arg).inc()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2),
            st.one_of(_operation, st.tuples(st.just("message"), st.booleans())),
        ),
        max_size=40,
    )
)
def test_workers_shared_numbers_add_up_to_one_servers(
    operations: list[tuple[int, tuple[str, object]]],
) -> None:
    """Events spread over three workers' parts of the shared region
    (server/podstate.py) scrape, from any worker, as one server's plain
    numbers fed them all - but for the one series the workers add."""
    pod = PodState(3)
    try:
        parts = [pod.metrics(i) for i in range(3)]
        one = Metrics()
        for index, (kind, arg) in operations:
            _apply(parts[index], kind, arg)
            _apply(one, kind, arg)
        names = {s.name for s in one.series} | {
            f"websocket_{n}" for n in ("messages_received", "received_bytes", "log_events_dropped")
        }
        expected = _samples(exposition.render(one).decode(), names)
        for index in range(3):
            text = exposition.render(Worker(pod, index).totals()).decode()
            assert _samples(text, names) == pytest.approx(expected)  # float sums: any order
            restarts = _samples(text, {"websocket_worker_restarts"})
            assert restarts[("websocket_worker_restarts_total", ())] == 0
    finally:
        pod.close()


def test_one_server_has_no_worker_series() -> None:
    """WS_WORKERS=1 scrapes as before: no websocket_worker_restarts_total."""
    text = exposition.render(Metrics()).decode()
    assert "websocket_worker_restarts" not in text
    assert "websocket_log_events_dropped_total 0.0" in text
