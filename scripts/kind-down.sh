#!/usr/bin/env bash
# Delete the kind cluster made by scripts/kind-up.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.tools/bin:$PATH"
KIND_CLUSTER=${KIND_CLUSTER:-knative-ws}
kind delete cluster --name "$KIND_CLUSTER"
