#!/usr/bin/env bash
# Run a command against the local single-node cluster: bring it up
# (scripts/local-cluster.sh), build the image into it (scripts/local-image.sh),
# run the command with the e2e environment (scripts/local-e2e.env), and tear
# the cluster down afterwards - also when something fails. Exits with the
# command's status.
#   scripts/with-local-cluster.sh .venv/bin/python -m pytest e2e -v
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$#" -gt 0 ] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }
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
"$@"
