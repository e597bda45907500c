#!/usr/bin/env bash
# Build the images the e2e suite runs and load them into the kind cluster:
# the server as dev.local/knative-websocket-server:dev (the dev overlay's
# image; Knative skips tag resolution for dev.local/, and imagePullPolicy is
# IfNotPresent), the chat example (the Dockerfile's target "chat") and
# Debian's Redis (e2e/redis.Dockerfile), both for e2e/test_backplane.py.
# scripts/kind-e2e.sh names the same three.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.tools/bin:$PATH"
KIND_CLUSTER=${KIND_CLUSTER:-knative-ws}
IMAGE=${IMAGE:-dev.local/knative-websocket-server:dev}
CHAT_IMAGE=${CHAT_IMAGE:-dev.local/knative-websocket-chat:dev}
REDIS_IMAGE=${REDIS_IMAGE:-dev.local/redis:bookworm}
docker build -t "$IMAGE" .
docker build --target chat -t "$CHAT_IMAGE" .
docker build -t "$REDIS_IMAGE" - <e2e/redis.Dockerfile
for image in "$IMAGE" "$CHAT_IMAGE" "$REDIS_IMAGE"; do
  kind load docker-image "$image" --name "$KIND_CLUSTER"
done
