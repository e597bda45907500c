#!/usr/bin/env bash
# The whole test suite, from a fresh machine: set up, lint, run every test -
# unit, integration, reliability, manifests and e2e - with the e2e suite on
# the local single-node Kubernetes (scripts/with-local-cluster.sh; the first
# run builds Kubernetes, about 15 minutes, later runs reuse the cache), then
# the Autobahn conformance run (conformance/autobahn.sh, about 12 minutes).
#
# SKIP_LOCAL_CLUSTER=1 leaves the cluster out (the e2e tests then skip with
# the reason); the cluster needs root on Debian 12. SKIP_CONFORMANCE=1 leaves
# Autobahn out. Extra arguments go to pytest (e.g. scripts/test.sh -k drain).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/lint.sh
export PATH="$PWD/.tools/bin:$PWD/tools/node_modules/.bin:$PATH"
pytest=(.venv/bin/python -m pytest "$@")
status=0
if [ "${SKIP_LOCAL_CLUSTER:-0}" = 1 ]; then
  "${pytest[@]}" || status=$?
else
  scripts/with-local-cluster.sh "${pytest[@]}" || status=$?
fi
if [ "${SKIP_CONFORMANCE:-0}" != 1 ]; then
  conformance/autobahn.sh || status=$?
fi
exit "$status"
