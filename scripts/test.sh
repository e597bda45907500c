#!/usr/bin/env bash
# The whole test suite, from a fresh machine: set up, lint, run every test -
# unit, integration, reliability, manifests and e2e - with the e2e suite on
# the local single-node Kubernetes (scripts/with-local-cluster.sh; the first
# run builds Kubernetes, about 15 minutes, later runs reuse the cache), then
# the Autobahn conformance run (conformance/autobahn.sh, about 12 minutes).
#
# Then the tests again with the wire core compiled (mypyc; SKIP_COMPILED=1
# leaves that out).
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
# The same tests (all but the reliability suite and the cluster) once more
# with the wire core compiled by mypyc (scripts/build-speedups.sh); the run
# above used the pure-Python source. SKIP_COMPILED=1 leaves this out.
if [ "${SKIP_COMPILED:-0}" != 1 ]; then
  printf '==> the test suite again, with server/wire compiled (mypyc)\n'
  if scripts/build-speedups.sh; then
    WS_EXPECT_COMPILED_WIRE=1 .venv/bin/python -m pytest tests -m "not reliability" -q \
      -p no:cacheprovider "$@" || status=$?
  else
    status=1
  fi
  scripts/build-speedups.sh --clean
fi
if [ "${SKIP_CONFORMANCE:-0}" != 1 ]; then
  conformance/autobahn.sh || status=$?
fi
exit "$status"
