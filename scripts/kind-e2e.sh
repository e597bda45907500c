#!/usr/bin/env bash
# The e2e suite on the kind cluster of scripts/kind-up.sh (the current
# kubeconfig context), as the GitHub e2e job runs it: the Knative tests
# (both routes, autoscaling, drain), the plain-Kubernetes ones and the
# backplane's (chat on two pods, one Redis), on the images
# scripts/kind-load.sh loaded. A missing cluster, Knative or image fails
# the run instead of skipping. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export E2E_REQUIRE_CLUSTER=${E2E_REQUIRE_CLUSTER:-1}
export E2E_REQUIRE_KNATIVE=${E2E_REQUIRE_KNATIVE:-1}
export E2E_IMAGE=${E2E_IMAGE:-dev.local/knative-websocket-server:dev}
# The chat example and Redis that scripts/kind-load.sh loaded, for
# e2e/test_backplane.py: promised, so a missing one fails instead of skipping.
export E2E_CHAT_IMAGE=${E2E_CHAT_IMAGE:-dev.local/knative-websocket-chat:dev}
export E2E_REDIS_IMAGE=${E2E_REDIS_IMAGE:-dev.local/redis:bookworm}
export E2E_REQUIRE_BACKPLANE=${E2E_REQUIRE_BACKPLANE:-1}
# kind resolves Service names: the chat pods reach Redis as redis:6379.
export E2E_CLUSTER_DNS=${E2E_CLUSTER_DNS:-1}
# scripts/kind-load.sh built it with this docker (e2e/test_image.py runs it).
export E2E_DOCKER=${E2E_DOCKER:-docker}
exec .venv/bin/python -m pytest e2e -v -s -rs -p no:cacheprovider "$@"
