#!/usr/bin/env bash
# Download Knative Serving's CRDs (pinned) for the manifest tests, on
# machines without ../shared/knative (GitHub Actions), and print the path
# to put in KNATIVE_SERVICE_CRD.
set -euo pipefail
KNATIVE_VERSION=${KNATIVE_VERSION:-v1.23.0}
dest=${1:-${RUNNER_TEMP:-/tmp}/knative-serving-crds-$KNATIVE_VERSION.yaml}
curl -fsSLo "$dest" \
  "https://github.com/knative/serving/releases/download/knative-$KNATIVE_VERSION/serving-crds.yaml"
grep -q 'name: services.serving.knative.dev' "$dest"
echo "$dest"
