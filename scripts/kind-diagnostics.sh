#!/usr/bin/env bash
# After a failed e2e run on kind: keep what explains it, in one directory
# the workflow uploads as an artifact.
#   scripts/kind-diagnostics.sh [DIR]     (default: ./kind-diagnostics)
# DIR/kind: `kind export logs` (every node's kubelet, containerd and pod
# logs); DIR/pods: current and previous logs of every container of the
# Knative Serving and Kourier pods and of the e2e namespaces' pods;
# DIR/cluster.txt: scripts/cluster-diagnostics.sh (objects, conditions,
# events; also printed to the job log). Never fails: it runs after a
# failure and must not hide it.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 0
export PATH="$PWD/.tools/bin:$PATH"
KIND_CLUSTER=${KIND_CLUSTER:-knative-ws}
dir=${1:-kind-diagnostics}
mkdir -p "$dir/pods"
kind export logs "$dir/kind" --name "$KIND_CLUSTER"
scripts/cluster-diagnostics.sh 2>&1 | tee "$dir/cluster.txt"
namespaces="knative-serving kourier-system $(kubectl get ns -o name | grep -E 'ws-e2e|ws-helm|websocket' | cut -d/ -f2 | tr '\n' ' ')"
for ns in $namespaces; do
  for pod in $(kubectl get pods -n "$ns" -o name | cut -d/ -f2); do
    kubectl logs -n "$ns" "$pod" --all-containers --prefix --timestamps >"$dir/pods/$ns.$pod.log" 2>&1
    kubectl logs -n "$ns" "$pod" --all-containers --prefix --timestamps --previous \
      >"$dir/pods/$ns.$pod.previous.log" 2>/dev/null || rm -f "$dir/pods/$ns.$pod.previous.log"
    kubectl get pod -n "$ns" "$pod" -o yaml >"$dir/pods/$ns.$pod.yaml" 2>&1
  done
done
echo "diagnostics in $dir"
exit 0
