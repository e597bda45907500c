#!/usr/bin/env bash
# Download the prometheus-operator's PodMonitor, ServiceMonitor and
# PrometheusRule CRDs (pinned) for the monitoring manifest tests, on machines
# without ../shared/prometheus-operator (GitHub Actions), and print the
# directory to put in PROMETHEUS_OPERATOR_CRDS (e2e/validate.py).
set -euo pipefail
VERSION=${PROMETHEUS_OPERATOR_VERSION:-v0.93.0}
dest=${1:-${RUNNER_TEMP:-/tmp}/prometheus-operator-crds-$VERSION}
base="https://raw.githubusercontent.com/prometheus-operator/prometheus-operator/$VERSION/example/prometheus-operator-crd"
mkdir -p "$dest"
for pair in podmonitors:PodMonitor servicemonitors:ServiceMonitor prometheusrules:PrometheusRule; do
  plural=${pair%%:*}
  kind=${pair#*:}
  curl -fsSLo "$dest/$plural-crd.yaml" "$base/monitoring.coreos.com_$plural.yaml"
  grep -q "kind: $kind\$" "$dest/$plural-crd.yaml"
done
echo "$dest"
