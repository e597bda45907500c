#!/usr/bin/env bash
# Only the e2e suite, for real on this machine, on the local single-node
# cluster (scripts/with-local-cluster.sh). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/with-local-cluster.sh .venv/bin/python -m pytest e2e -v -rs -p no:cacheprovider "$@"
