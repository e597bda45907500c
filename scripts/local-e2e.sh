#!/usr/bin/env bash
# The e2e suite for real on this machine: bring up the local single-node
# cluster (scripts/local-cluster.sh), build the image from the Dockerfile on
# a debootstrapped Debian base with wheels built here, run `pytest e2e`
# against it, and tear everything down - also when something fails.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.tools/bin:$PATH"
IMAGE=dev.local/knative-websocket-server:dev
log() { printf '==> [local-e2e %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

cleanup() {
  local status=$?
  scripts/local-cluster.sh down || true
  exit "$status"
}
trap cleanup EXIT
scripts/local-cluster.sh up

log "building $IMAGE from the Dockerfile (offline: wheels/ + a local Debian base)"
PYTHON=.venv/bin/python scripts/build-wheels.sh >/dev/null
DOCKER_BUILDKIT=0 scripts/local-cluster.sh docker build -q \
  --build-arg BASE_IMAGE=kws.local/python:bookworm --build-arg PIP_NO_INDEX=1 \
  -t "$IMAGE" . >/dev/null

log "pytest e2e"
KUBECONFIG=/run/kws/kubeconfig E2E_IMAGE=$IMAGE E2E_INSTALL_KNATIVE_CRD=1 E2E_REQUIRE_CLUSTER=1 \
  .venv/bin/python -m pytest e2e -v -rs -p no:cacheprovider "$@"
