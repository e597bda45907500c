"""Fixtures for the end-to-end suite: a cluster from the current kubeconfig,
or a skip that says why there is none."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .cluster import Cluster, unreachable_reason
from .held import READY_TIMEOUT, e2e_timeout


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.path):
            item.add_marker(pytest.mark.cluster)
            # The 120 s global of pyproject.toml is shorter than a readiness
            # wait: every e2e test without its own marker gets one that fits.
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(e2e_timeout()))


def _skip(reason: str, promise: str) -> None:
    """Skip - or fail, where the environment promises it (E2E_REQUIRE_CLUSTER=1,
    E2E_REQUIRE_KNATIVE=1 in CI), so a CI job can never pass by skipping."""
    if os.environ.get(promise):
        pytest.fail(f"{promise} is set, but: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The cluster of $KUBECONFIG (or ~/.kube/config, or in-cluster)."""
    try:
        connected = Cluster.connect()
    except Exception as exc:  # any failure to reach it is a reason to skip
        _skip(unreachable_reason(exc), "E2E_REQUIRE_CLUSTER")
        raise
    yield connected
    connected.api.close()


@pytest.fixture(scope="session")
def knative(cluster: Cluster) -> Cluster:
    """The cluster, when Knative Serving is installed in it."""
    if not cluster.has_knative():
        _skip(
            "Knative Serving is not installed in the cluster "
            "(no services.serving.knative.dev CRD or no knative-serving/controller)",
            "E2E_REQUIRE_KNATIVE",
        )
    return cluster


@pytest.fixture(scope="session")
def ready_timeout() -> float:
    return READY_TIMEOUT
