#!/usr/bin/env bash
# Print what a person needs when an e2e run fails: every Knative object and
# its conditions, pods, recent events and the logs of Knative's and our pods.
set -uo pipefail
section() { printf '\n===== %s =====\n' "$*"; }
section "nodes"
kubectl get nodes -o wide
section "Knative Services, Configurations, Revisions, Routes"
kubectl get ksvc,configuration,revision,route -A -o wide
section "Knative Services (conditions)"
kubectl get ksvc -A -o jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.name}: {range .status.conditions[*]}{.type}={.status} {.reason} {.message}; {end}{"\n"}{end}'
section "pods"
kubectl get pods -A -o wide
section "events (last 100)"
kubectl get events -A --sort-by=.lastTimestamp | tail -n 100
for ns in knative-serving kourier-system; do
  for pod in $(kubectl get pods -n "$ns" -o name); do
    section "logs $ns/$pod"
    kubectl logs -n "$ns" "$pod" --all-containers --tail=100
  done
done
for ns in $(kubectl get ns -o name | grep -E 'ws-e2e|websocket' | cut -d/ -f2); do
  for pod in $(kubectl get pods -n "$ns" -o name); do
    section "logs $ns/$pod"
    kubectl logs -n "$ns" "$pod" --all-containers --tail=200
  done
done
exit 0
