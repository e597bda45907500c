#!/usr/bin/env bash
# Create a kind cluster with Knative Serving and Kourier, for the e2e suite.
# Needs Docker and network access (GitHub Actions, or a workstation).
#
#   scripts/kind-up.sh            # cluster "knative-ws"
#   KIND_CLUSTER=other scripts/kind-up.sh
#
# Everything is pinned: kind (and so its default node image), Knative
# Serving and net-kourier. The domain is example.com: the e2e suite reaches
# Services through a port-forward to the Kourier gateway with the Service's
# host as the Host header, so no DNS is needed.
set -euo pipefail
cd "$(dirname "$0")/.."

KIND_VERSION=${KIND_VERSION:-v0.33.0}
KNATIVE_VERSION=${KNATIVE_VERSION:-v1.23.0}
KIND_CLUSTER=${KIND_CLUSTER:-knative-ws}
BIN=${BIN:-$PWD/.tools/bin}
log() { printf '==> %s\n' "$*"; }

mkdir -p "$BIN"
export PATH="$BIN:$PATH"
if ! command -v kind >/dev/null 2>&1 || [ "$(kind version -q 2>/dev/null)" != "$KIND_VERSION" ]; then
  log "installing kind $KIND_VERSION"
  url="https://kind.sigs.k8s.io/dl/$KIND_VERSION/kind-linux-amd64"
  curl -fsSLo "$BIN/kind.tmp" "$url"
  expected=$(curl -fsSL "$url.sha256sum" | cut -d' ' -f1)
  echo "$expected  $BIN/kind.tmp" | sha256sum --check --status
  chmod +x "$BIN/kind.tmp"
  mv "$BIN/kind.tmp" "$BIN/kind"
fi

if kind get clusters | grep -qx "$KIND_CLUSTER"; then
  log "cluster $KIND_CLUSTER exists"
else
  log "creating kind cluster $KIND_CLUSTER"
  kind create cluster --name "$KIND_CLUSTER" --wait 120s
fi
kubectl config use-context "kind-$KIND_CLUSTER"

base="https://github.com/knative"
log "installing Knative Serving $KNATIVE_VERSION"
kubectl apply -f "$base/serving/releases/download/knative-$KNATIVE_VERSION/serving-crds.yaml"
kubectl wait --for=condition=Established --timeout=60s crd/services.serving.knative.dev
kubectl apply -f "$base/serving/releases/download/knative-$KNATIVE_VERSION/serving-core.yaml"
log "installing Kourier $KNATIVE_VERSION"
kubectl apply -f "$base/net-kourier/releases/download/knative-$KNATIVE_VERSION/kourier.yaml"
kubectl patch configmap/config-network -n knative-serving --type merge \
  -p '{"data":{"ingress-class":"kourier.ingress.networking.knative.dev"}}'
kubectl patch configmap/config-domain -n knative-serving --type merge \
  -p '{"data":{"example.com":""}}'

log "waiting for Knative and Kourier"
kubectl wait deployment --all -n knative-serving --for=condition=Available --timeout=300s
kubectl wait deployment --all -n kourier-system --for=condition=Available --timeout=300s
log "cluster $KIND_CLUSTER is ready (context kind-$KIND_CLUSTER)"
