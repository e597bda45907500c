#!/usr/bin/env bash
# Install the chart as a user would, wait for the Knative Service, and run
# its `helm test` hook (the probe client, inside the cluster).
#   scripts/helm-test.sh [VALUES_FILE] [NAMESPACE]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.tools/bin:$PATH"
values=${1:-chart/ci/dev-values.yaml}
ns=${2:-ws-helm}
release=websocket-server
helm upgrade --install "$release" chart -f "$values" --namespace "$ns" --create-namespace
kubectl wait "ksvc/$release" -n "$ns" --for=condition=Ready --timeout=300s
kubectl get ksvc "$release" -n "$ns"
helm test "$release" --namespace "$ns" --logs --timeout 5m
