# The WebSocket echo server image: multi-stage, slim, non-root.
#
#   docker build -t knative-websocket-server .
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/knative-websocket-server:TAG --push .
#
# BASE_IMAGE can be swapped for any Debian-based image with Python 3.10+ on
# PATH as `python3` (the local cluster builds one with debootstrap). With
# PIP_NO_INDEX=1 the build installs only from wheels in ./wheels/ (see
# scripts/build-wheels.sh), for builders that cannot reach a package index.
ARG BASE_IMAGE=python:3.11.14-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG PIP_NO_INDEX=0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_NO_INDEX=${PIP_NO_INDEX} \
    PIP_FIND_LINKS=/src/wheels
WORKDIR /src
COPY requirements/runtime.txt requirements/runtime.txt
COPY wheels/ wheels/
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-deps -r requirements/runtime.txt
COPY pyproject.toml README.md LICENSE ./
COPY server/ server/
RUN /opt/venv/bin/pip install --no-deps . \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib \
    && /opt/venv/bin/pip uninstall -y pip setuptools wheel

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="knative-websocket-server" \
      org.opencontainers.image.description="Tornado WebSocket echo server for Knative" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=8080
COPY --from=build /opt/venv /opt/venv
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["python", "-m", "server"]
