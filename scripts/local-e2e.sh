#!/usr/bin/env bash
# Only the e2e suite, for real on this machine: the local single-node cluster
# (scripts/local-cluster.sh), the image built from the Dockerfile
# (scripts/local-image.sh), `pytest e2e`, and a teardown that also runs when
# something fails. Extra arguments go to pytest. scripts/test.sh does the
# same around the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
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
.venv/bin/python -m pytest e2e -v -rs -p no:cacheprovider "$@"
