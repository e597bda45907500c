"""The e2e suite's helpers that need no cluster, and how the suite behaves
when there is none."""

from __future__ import annotations

import asyncio
import time

import pytest

from e2e.cluster import (
    Condition,
    condition_changes,
    conditions_of,
    format_diagnostics,
    host_of,
    is_pod_ready,
    is_ready,
    unreachable_reason,
)
from e2e.held import (
    GOING_AWAY,
    MAX_AGE_REASON,
    NO_CLOSE_FRAME,
    Lifetime,
    assert_drained,
    close_all,
    drain,
    echo_each,
    echo_until_closed,
    hold,
    wait_for,
)
from e2e.render import knative_service, routes

from .conftest import ServerProcess, run_python


def _ksvc(generation: int, observed: int, *conds: tuple[str, str, str]) -> dict[str, object]:
    return {
        "kind": "Service",
        "metadata": {"name": "websocket-server", "generation": generation},
        "status": {
            "observedGeneration": observed,
            "conditions": [{"type": t, "status": s, "reason": r} for t, s, r in conds],
        },
    }


def test_conditions_are_parsed_by_type() -> None:
    obj = _ksvc(1, 1, ("Ready", "Unknown", "RevisionMissing"), ("RoutesReady", "False", ""))
    conds = conditions_of(obj)
    assert conds["Ready"] == Condition("Ready", "Unknown", "RevisionMissing")
    assert str(conds["Ready"]) == "Ready=Unknown (RevisionMissing)"
    assert conditions_of({"status": None}) == {}


def test_only_changed_conditions_are_reported() -> None:
    before = conditions_of(_ksvc(1, 1, ("Ready", "Unknown", "X"), ("RoutesReady", "Unknown", "Y")))
    after = conditions_of(_ksvc(1, 1, ("Ready", "Unknown", "X"), ("RoutesReady", "True", "")))
    assert condition_changes(before, after) == ["RoutesReady=True"]
    assert condition_changes({}, before) == ["Ready=Unknown (X)", "RoutesReady=Unknown (Y)"]


def test_ready_needs_the_current_generation() -> None:
    assert is_ready(_ksvc(2, 2, ("Ready", "True", "")))
    assert not is_ready(_ksvc(2, 1, ("Ready", "True", "")))  # stale status
    assert not is_ready(_ksvc(1, 1, ("Ready", "False", "RevisionFailed")))
    assert not is_ready({"kind": "Service", "metadata": {}, "status": {}})
    deployment = {
        "kind": "Deployment",
        "status": {"conditions": [{"type": "Available", "status": "True"}]},
    }
    assert is_ready(deployment)


def test_pod_readiness() -> None:
    assert is_pod_ready({"status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    assert not is_pod_ready({"status": {"conditions": [{"type": "Ready", "status": "False"}]}})
    assert not is_pod_ready({"status": {}})


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://websocket-server.ns.example.com", "websocket-server.ns.example.com"),
        (
            "https://websocket-server.ns.127.0.0.1.sslip.io/",
            "websocket-server.ns.127.0.0.1.sslip.io",
        ),
        (
            "http://websocket-server.ns.svc.cluster.local:80",
            "websocket-server.ns.svc.cluster.local",
        ),
    ],
)
def test_host_comes_from_status_url(url: str, host: str) -> None:
    assert host_of(url) == host


def test_host_of_rejects_a_url_without_host() -> None:
    with pytest.raises(ValueError, match="no host"):
        host_of("not a url")


def test_diagnostics_show_conditions_events_and_logs() -> None:
    service = _ksvc(1, 1, ("Ready", "False", "RevisionFailed"))
    events = [
        {
            "lastTimestamp": "2026-11-25T10:00:02Z",
            "type": "Warning",
            "involvedObject": {"kind": "Pod", "name": "websocket-server-00001-abc"},
            "reason": "BackOff",
            "message": "Back-off pulling image",
        },
        {
            "lastTimestamp": "2026-11-25T10:00:01Z",
            "type": "Normal",
            "involvedObject": {"kind": "Pod", "name": "websocket-server-00001-abc"},
            "reason": "Scheduled",
            "message": "assigned",
        },
    ]
    logs = {
        "websocket-server-00001-abc/websocket-server": "\n".join(f"line {i}" for i in range(100))
    }
    text = format_diagnostics([service], events, logs, tail=3)
    assert "Service/websocket-server: Ready=False (RevisionFailed)" in text
    assert text.index("Scheduled") < text.index("BackOff")  # oldest first
    assert "Warning Pod/websocket-server-00001-abc BackOff: Back-off pulling image" in text
    assert "line 99" in text
    assert "line 96" not in text
    assert format_diagnostics([], [], {}).count("(none)") == 1


def test_unreachable_reason_is_one_line() -> None:
    reason = unreachable_reason(ConnectionError("refused\nmore detail"))
    assert reason == "no reachable Kubernetes cluster (ConnectionError: refused)"


def test_rendered_routes_carry_a_namespace_for_apply() -> None:
    route = next(r for r in routes() if r.tool == "kustomize")
    service = knative_service(route.render(namespace="ws-e2e-x"))
    assert service["metadata"]["namespace"] == "ws-e2e-x"


def test_e2e_suite_skips_with_the_reason_when_no_cluster() -> None:
    no_cluster = {
        "PATH": "/usr/bin:/bin",
        "KUBECONFIG": "/nonexistent/kubeconfig",
        "HOME": "/nonexistent",
    }
    proc = run_python(
        "-m",
        "pytest",
        "e2e/test_knative.py",
        "-q",
        "-rs",
        "-p",
        "no:cacheprovider",
        env=no_cluster,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "passed" not in proc.stdout
    assert "skipped" in proc.stdout
    assert "no reachable Kubernetes cluster" in proc.stdout


def test_held_connections_answer_pings_during_api_waits_then_drain(
    server_process: type[ServerProcess],
) -> None:
    """e2e/held.py's mechanics on a real server process on loopback, no
    cluster: connections held through a blocking wait (run on another thread,
    as the API polls are) keep answering pings every 0.5 s, still echo, then
    drain with 1001 on SIGTERM. e2e/test_held_connections.py does the same on
    a cluster, through a port-forward."""
    server = server_process(
        env={"WS_PING_INTERVAL": "0.5", "WS_PING_TIMEOUT": "0.5", "WS_LOG_MESSAGES": "false"}
    )
    server.wait_ready()

    async def scenario() -> None:
        async with hold(f"127.0.0.1:{server.port}", 3) as held:
            until = time.monotonic() + 3
            polls = await wait_for(lambda: time.monotonic() >= until, 10, "the hold", interval=0.5)
            assert polls >= 5
            await echo_each(held, "still open")
            pings = [one.pings for one in held]
            assert min(pings) >= 4, f"pings received: {pings}"
            await drain(held, server.signal)
        assert_drained(held, (1001,))

    asyncio.run(scenario())
    assert server.wait() == 0


def test_echo_until_closed_reports_the_servers_clean_close_at_its_maximum_age(
    server_process: type[ServerProcess],
) -> None:
    """e2e/held.py's echo_until_closed (what the Knative clock tests and the
    plain-mode age test read) on a real server process with a 2 s maximum
    age: echoes until the end, then 1001 "max connection age", in time."""
    server = server_process(env={"WS_MAX_CONNECTION_AGE": "2", "WS_LOG_MESSAGES": "false"})
    server.wait_ready()

    async def scenario() -> None:
        async with hold(f"127.0.0.1:{server.port}", 2) as held:
            lifetimes = await asyncio.gather(*(echo_until_closed(one, 0.2, 10) for one in held))
        for lifetime in lifetimes:
            assert (lifetime.code, lifetime.reason) == (GOING_AWAY, MAX_AGE_REASON), str(lifetime)
            assert lifetime.closed_after <= 2.5, str(lifetime)
            assert lifetime.all_echoed, str(lifetime)
            assert lifetime.echoes[-1] >= lifetime.closed_after - 0.5, str(lifetime)

    asyncio.run(scenario())


def test_echo_until_closed_reports_a_cut_as_1006(server_process: type[ServerProcess]) -> None:
    """A server killed outright (SIGKILL: no close frame, as Knative's
    timeout handler cuts a connection) is reported as 1006, with the echoes
    that came back before it."""
    server = server_process(env={"WS_LOG_MESSAGES": "false"})
    server.wait_ready()

    async def scenario() -> None:
        async with hold(f"127.0.0.1:{server.port}", 1) as [one]:
            asyncio.get_running_loop().call_later(1.0, server.proc.kill)
            lifetime = await echo_until_closed(one, 0.2, 10)
        assert lifetime.code == NO_CLOSE_FRAME, str(lifetime)
        assert lifetime.reason is None
        assert 0.9 <= lifetime.closed_after <= 3, str(lifetime)
        assert len(lifetime.echoes) >= 3, str(lifetime)

    asyncio.run(scenario())
    server.wait()


def test_echo_until_closed_fails_a_connection_that_outlives_its_limit(
    server_process: type[ServerProcess],
) -> None:
    server = server_process(env={"WS_LOG_MESSAGES": "false"})
    server.wait_ready()

    async def scenario() -> None:
        async with hold(f"127.0.0.1:{server.port}", 1) as [one]:
            with pytest.raises(AssertionError, match="still open after"):
                await echo_until_closed(one, 0.2, 1)
            await close_all([one])

    asyncio.run(scenario())


def test_a_lifetime_excuses_only_a_message_that_crossed_the_close() -> None:
    assert Lifetime([1.0], 2.0, 1001, "max connection age", 0).all_echoed
    assert Lifetime([1.0], 2.0, 1001, "max connection age", 1, 0.05).all_echoed
    assert not Lifetime([1.0], 2.0, 1001, "max connection age", 1, 1.5).all_echoed
    assert not Lifetime([1.0], 2.0, 1001, "max connection age", 2, 0.05).all_echoed
