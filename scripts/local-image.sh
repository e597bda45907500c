#!/usr/bin/env bash
# Build the image from the Dockerfile inside the local cluster's dockerd
# (scripts/local-cluster.sh), offline: the bases are the debootstrapped Debian
# with Python (runtime) and the same with gcc and the Python headers (the
# build stage, which compiles the wire core with mypyc), and pip installs
# only from wheels/ (scripts/build-wheels.sh). The chat example's image (the
# Dockerfile's target "chat", for e2e/test_backplane.py) is built beside it
# from the same stages.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-dev.local/knative-websocket-server:dev}
CHAT_IMAGE=${CHAT_IMAGE:-dev.local/knative-websocket-chat:dev}
PYTHON=${PYTHON:-.venv/bin/python} scripts/build-wheels.sh >/dev/null
build=(scripts/local-cluster.sh docker build -q
  --build-arg BASE_IMAGE=kws.local/python:bookworm
  --build-arg BUILD_IMAGE=kws.local/python-build:bookworm --build-arg PIP_NO_INDEX=1)
printf '==> building %s from the Dockerfile\n' "$IMAGE"
DOCKER_BUILDKIT=0 "${build[@]}" -t "$IMAGE" . >/dev/null
printf '==> building %s (target chat)\n' "$CHAT_IMAGE"
DOCKER_BUILDKIT=0 "${build[@]}" --target chat -t "$CHAT_IMAGE" . >/dev/null
