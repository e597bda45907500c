#!/usr/bin/env bash
# Build the image from the Dockerfile and load it into the kind cluster as
# dev.local/knative-websocket-server:dev (the dev overlay's image; Knative
# skips tag resolution for dev.local/, and imagePullPolicy is IfNotPresent).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.tools/bin:$PATH"
KIND_CLUSTER=${KIND_CLUSTER:-knative-ws}
IMAGE=${IMAGE:-dev.local/knative-websocket-server:dev}
docker build -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$KIND_CLUSTER"
