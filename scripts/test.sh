#!/usr/bin/env bash
# The whole test suite, from a fresh machine: set up, lint, bring up the
# local single-node Kubernetes (scripts/local-cluster.sh; the first run builds
# Kubernetes, about 15 minutes, later runs reuse the cache), build the image,
# run every test - unit, integration, manifests and e2e - and tear the
# cluster down, also on failure.
#
# SKIP_LOCAL_CLUSTER=1 leaves the cluster out (the e2e tests then skip with
# the reason); the cluster needs root on Debian 12. Extra arguments go to
# pytest (e.g. scripts/test.sh -k drain).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/lint.sh
export PATH="$PWD/.tools/bin:$PWD/tools/node_modules/.bin:$PATH"

if [ "${SKIP_LOCAL_CLUSTER:-0}" != 1 ]; then
  cleanup() {
    local status=$?
    scripts/local-cluster.sh down || true
    exit "$status"
  }
  trap cleanup EXIT
  scripts/local-cluster.sh up
  scripts/local-image.sh
  # shellcheck source=scripts/local-e2e.env
  . scripts/local-e2e.env
fi

printf '==> pytest\n'
.venv/bin/python -m pytest "$@"
