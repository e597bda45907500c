#!/usr/bin/env bash
# Run a command against the local single-node cluster: bring it up
# (scripts/local-cluster.sh), build the image into it (scripts/local-image.sh),
# start the loopback OCI registry (scripts/registry.sh) and publish the image
# and the chart to it as a release would (scripts/release-local.sh), run the
# command with the e2e environment (scripts/local-e2e.env), and tear the
# registry and the cluster down afterwards - also when something fails.
# Exits with the command's status.
#   scripts/with-local-cluster.sh .venv/bin/python -m pytest e2e -v
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$#" -gt 0 ] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }
cleanup() {
  local status=$?
  scripts/registry.sh down || true
  scripts/local-cluster.sh down || true
  exit "$status"
}
trap cleanup EXIT
scripts/local-cluster.sh up
scripts/local-image.sh
scripts/registry.sh up
scripts/release-local.sh
# shellcheck source=scripts/local-e2e.env
. scripts/local-e2e.env
"$@"
