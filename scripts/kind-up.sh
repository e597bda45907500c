#!/usr/bin/env bash
# Create a kind cluster with Knative Serving and Kourier, for the e2e suite.
# Needs Docker and network access (GitHub Actions, or a workstation).
#
#   scripts/kind-up.sh            # cluster "knative-ws"
#   KIND_CLUSTER=other scripts/kind-up.sh
#
# Everything is pinned: kind (version and sha256), the node image (by
# digest), Knative Serving and net-kourier; each pin names its source. The
# domain is example.com: the e2e suite reaches Services through a
# port-forward to the Kourier gateway with the Service's host as the Host
# header, so no DNS is needed.
set -euo pipefail
cd "$(dirname "$0")/.."

# kind v0.32.0: the release tag and its assets kind-linux-amd64 and
# kind-linux-amd64.sha256sum (hack/release/build/cross.sh) in
# github.com/kubernetes-sigs/kind; the sha256 is checked against this pin AND
# against the .sha256sum the release publishes.
KIND_VERSION=${KIND_VERSION:-v0.32.0}
KIND_SHA256=${KIND_SHA256:-50030de23cf40a18505f20426f6a8506bedf13c6e509244bd1fa9463721b0f54}
# Kubernetes 1.35 (Knative Serving v1.23.0 needs 1.34 or newer; its own kind
# e2e workflow tests v1.34.x and v1.35.x): the node image built for kind
# v0.32.0, as chainguard-dev/actions setup-kind (which Knative's CI uses)
# pins it for kind 0.32.0.
KIND_NODE_IMAGE=${KIND_NODE_IMAGE:-kindest/node:v1.35.5@sha256:ce977ae6d65918d0b58a5f8b5e940429c2ce42fa3a5619ec2bbc60b949c0ac95}
# kubectl v1.35.5, the node's own version (kubectl supports one minor of
# skew; the node's minor is checked below): https://dl.k8s.io/release/v1.35.5/
# bin/linux/amd64/kubectl, checked against this pin AND the .sha256 file
# dl.k8s.io publishes beside it. Not the runner's kubectl, whose version
# moves with the runner image.
KUBECTL_VERSION=${KUBECTL_VERSION:-v1.35.5}
KUBECTL_SHA256=${KUBECTL_SHA256:-90f75ea6ecc9ea5633262e1c0b83a40560003b30fc94a04cb099404fcef0c224}
# Knative Serving and net-kourier v1.23.0: release assets serving-crds.yaml,
# serving-core.yaml (knative/serving hack/generate-yamls.sh) and kourier.yaml
# (knative-extensions/net-kourier hack/release.sh; the project moved from
# github.com/knative/net-kourier, which now only redirects).
KNATIVE_VERSION=${KNATIVE_VERSION:-v1.23.0}
# config-defaults' revision-response-start-timeout-seconds (Knative: 300):
# small, so e2e/test_knative.py sees Knative's response-start cut, and the
# chart's responseStartTimeoutSeconds: 0 surviving past it, within a minute.
KNATIVE_RESPONSE_START_TIMEOUT=${KNATIVE_RESPONSE_START_TIMEOUT:-20}
KIND_CLUSTER=${KIND_CLUSTER:-knative-ws}
BIN=${BIN:-$PWD/.tools/bin}
log() { printf '==> %s\n' "$*"; }

# Retry a command that can race a webhook coming up: up to 30 tries, 5 s apart.
retry() {
  local try
  for try in $(seq 1 30); do
    if "$@"; then return 0; fi
    log "try $try failed: $*; again in 5 s"
    sleep 5
  done
  "$@"
}

# Before anything is downloaded: kubectl of the same minor as the node image's Kubernetes (kindest/node:vX.Y.Z@...).
node_minor=$(sed -E 's/^[^:]*:v([0-9]+\.[0-9]+)\..*$/\1/' <<<"$KIND_NODE_IMAGE")
kubectl_minor=$(sed -E 's/^v([0-9]+\.[0-9]+)\..*$/\1/' <<<"$KUBECTL_VERSION")
if [ "$node_minor" != "$kubectl_minor" ]; then
  echo "kubectl $KUBECTL_VERSION does not match the node's Kubernetes $node_minor ($KIND_NODE_IMAGE)" >&2
  exit 1
fi

mkdir -p "$BIN"
export PATH="$BIN:$PATH"
# `kind version -q` prints the bare semver ("0.32.0"), without the leading v.
if ! command -v kind >/dev/null 2>&1 || [ "$(kind version -q 2>/dev/null)" != "${KIND_VERSION#v}" ]; then
  log "installing kind $KIND_VERSION"
  url="https://github.com/kubernetes-sigs/kind/releases/download/$KIND_VERSION/kind-linux-amd64"
  curl -fsSLo "$BIN/kind.tmp" "$url"
  published=$(curl -fsSL "$url.sha256sum" | cut -d' ' -f1)
  if [ "$published" != "$KIND_SHA256" ]; then
    echo "kind $KIND_VERSION: published sha256 $published differs from the pinned $KIND_SHA256" >&2
    exit 1
  fi
  echo "$KIND_SHA256  $BIN/kind.tmp" | sha256sum --check --status || {
    echo "kind $KIND_VERSION: download does not match sha256 $KIND_SHA256" >&2
    exit 1
  }
  chmod +x "$BIN/kind.tmp"
  mv "$BIN/kind.tmp" "$BIN/kind"
fi
log "kind $(kind version -q)"

if [ ! -x "$BIN/kubectl" ] || [ "$(sha256sum "$BIN/kubectl" | cut -d' ' -f1)" != "$KUBECTL_SHA256" ]; then
  log "installing kubectl $KUBECTL_VERSION"
  url="https://dl.k8s.io/release/$KUBECTL_VERSION/bin/linux/amd64/kubectl"
  curl -fsSLo "$BIN/kubectl.tmp" "$url"
  published=$(curl -fsSL "$url.sha256")
  if [ "$published" != "$KUBECTL_SHA256" ]; then
    echo "kubectl $KUBECTL_VERSION: published sha256 $published differs from the pinned $KUBECTL_SHA256" >&2
    exit 1
  fi
  echo "$KUBECTL_SHA256  $BIN/kubectl.tmp" | sha256sum --check --status || {
    echo "kubectl $KUBECTL_VERSION: download does not match sha256 $KUBECTL_SHA256" >&2
    exit 1
  }
  chmod +x "$BIN/kubectl.tmp"
  mv "$BIN/kubectl.tmp" "$BIN/kubectl"
fi
log "$(kubectl version --client | head -n 1) ($(command -v kubectl))"

if kind get clusters | grep -qx "$KIND_CLUSTER"; then
  log "cluster $KIND_CLUSTER exists"
else
  log "creating kind cluster $KIND_CLUSTER ($KIND_NODE_IMAGE)"
  kind create cluster --name "$KIND_CLUSTER" --image "$KIND_NODE_IMAGE" --wait 120s
fi
kubectl config use-context "kind-$KIND_CLUSTER"

serving="https://github.com/knative/serving/releases/download/knative-$KNATIVE_VERSION"
kourier="https://github.com/knative-extensions/net-kourier/releases/download/knative-$KNATIVE_VERSION"
log "installing Knative Serving $KNATIVE_VERSION"
kubectl apply -f "$serving/serving-crds.yaml"
kubectl wait --for=condition=Established --timeout=60s crd/services.serving.knative.dev
kubectl apply -f "$serving/serving-core.yaml"
log "installing Kourier $KNATIVE_VERSION"
kubectl apply -f "$kourier/kourier.yaml"

# Knative's config webhook (failurePolicy: Fail, rules filled in at run time)
# validates config-map changes: wait for it before patching, and retry the
# patches while its rules settle.
log "waiting for Knative and Kourier"
kubectl wait deployment --all -n knative-serving --for=condition=Available --timeout=300s
kubectl wait deployment --all -n kourier-system --for=condition=Available --timeout=300s
log "configuring Knative: Kourier as the ingress, domain example.com"
retry kubectl patch configmap/config-network -n knative-serving --type merge \
  -p '{"data":{"ingress-class":"kourier.ingress.networking.knative.dev"}}'
retry kubectl patch configmap/config-domain -n knative-serving --type merge \
  -p '{"data":{"example.com":""}}'
log "configuring Knative: revision-response-start-timeout-seconds $KNATIVE_RESPONSE_START_TIMEOUT"
retry kubectl patch configmap/config-defaults -n knative-serving --type merge \
  -p "{\"data\":{\"revision-response-start-timeout-seconds\":\"$KNATIVE_RESPONSE_START_TIMEOUT\"}}"
log "cluster $KIND_CLUSTER is ready (context kind-$KIND_CLUSTER)"
