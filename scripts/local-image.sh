#!/usr/bin/env bash
# Build the image from the Dockerfile inside the local cluster's dockerd
# (scripts/local-cluster.sh), offline: the bases are the debootstrapped Debian
# with Python (runtime) and the same with gcc and the Python headers (the
# build stage, which compiles the wire core with mypyc), and pip installs
# only from wheels/ (scripts/build-wheels.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-dev.local/knative-websocket-server:dev}
PYTHON=${PYTHON:-.venv/bin/python} scripts/build-wheels.sh >/dev/null
printf '==> building %s from the Dockerfile\n' "$IMAGE"
DOCKER_BUILDKIT=0 scripts/local-cluster.sh docker build -q \
  --build-arg BASE_IMAGE=kws.local/python:bookworm \
  --build-arg BUILD_IMAGE=kws.local/python-build:bookworm --build-arg PIP_NO_INDEX=1 \
  -t "$IMAGE" . >/dev/null
