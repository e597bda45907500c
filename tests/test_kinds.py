"""The server's vocabulary lives above the protocol core: ``wire`` names
only the protocol's failures, :mod:`server.kinds` names the rest, with one
mapping between them, and the label values dashboards and alerts use do
not change."""

from __future__ import annotations

import pytest

from server import kinds, wire
from server.kinds import REFUSALS, CloseCause, ErrorKind, error_kind
from server.wire import CloseCode, Connection, FailureKind

#: Every value as the metrics, the docs' tables, the PrometheusRule and the
#: Grafana dashboard spell it: a rename breaks them all.
LABELS = {
    "protocol_error",
    "invalid_payload",
    "message_too_big",
    "ping_timeout",
    "slow_consumer",
    "handler_exception",
    "abnormal_closure",
    "write_failed",
    "bad_handshake",
    "origin_rejected",
    "draining",
    "over_capacity",
    "headers_too_large",
    "request_head_timeout",
    "slow_http_client",
    "unauthorized",
    "forbidden",
    "rate_limited",
    "app_refused",
    "descriptors_exhausted",
    "backplane_unavailable",
    "backplane_overflow",
    "worker_failed",
    "worker_exited",
}


def test_label_values_are_unchanged() -> None:
    assert {kind.value for kind in ErrorKind} == LABELS
    assert {cause.value for cause in CloseCause} == {
        "client",
        "dropped",
        "error",
        "slow_consumer",
        "app",
        "max_age",
        "drain",
    }
    assert {kind.value for kind in REFUSALS} == {
        "bad_handshake",
        "origin_rejected",
        "draining",
        "over_capacity",
        "headers_too_large",
        "unauthorized",
        "forbidden",
        "rate_limited",
        "app_refused",
    }


def test_wire_knows_protocol_failures_only() -> None:
    assert {kind.value for kind in FailureKind} == {
        "protocol_error",
        "invalid_payload",
        "message_too_big",
    }
    for name in ("ErrorKind", "CloseCause", "REFUSALS"):
        assert not hasattr(wire, name), name


@pytest.mark.parametrize("failure", list(FailureKind))
def test_every_protocol_failure_maps_to_an_error_kind(failure: FailureKind) -> None:
    kind = error_kind(failure)
    assert kind is ErrorKind(failure.value)
    assert kind == failure


def test_a_parser_failure_reaches_the_server_as_its_error_kind() -> None:
    conn = Connection(max_message_size=1024)
    conn.receive_data(b"\x81\x7f" + (1 << 40).to_bytes(8, "big"))  # unmasked, too long
    (event,) = conn.events_received()
    assert isinstance(event, wire.Failed)
    assert error_kind(event.kind) in (ErrorKind.PROTOCOL_ERROR, ErrorKind.MESSAGE_TOO_BIG)
    assert event.code in (CloseCode.PROTOCOL_ERROR, CloseCode.MESSAGE_TOO_BIG)


def test_a_server_failure_keeps_its_kind() -> None:
    conn = Connection(max_message_size=1024)
    conn.fail(ErrorKind.SLOW_CONSUMER, CloseCode.POLICY_VIOLATION, "slow")
    assert conn.failure is not None
    assert error_kind(conn.failure.kind) is ErrorKind.SLOW_CONSUMER


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="no_such_kind"):
        error_kind("no_such_kind")
    assert kinds.__all__
