# The WebSocket echo server image: multi-stage, slim, non-root, with the
# per-message path (server/wire.py, sendqueue.py, transport.py) compiled by mypyc.
# The target `chat` is the chat example (examples/chat) on the same runtime.
#
#   docker build -t knative-websocket-server .
#   docker build --target chat -t knative-websocket-chat .
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/knative-websocket-server:TAG --push .
#
# BASE_IMAGE, the runtime stage, can be swapped for any Debian-based image
# with Python 3.10+ on PATH as `python3`. BUILD_IMAGE, the build stage, must
# have the same Python at the same path (the virtualenv it builds is copied
# across) plus gcc and the Python headers: the default is the full
# python:3.11.14-bookworm beside the slim runtime python:3.11.14-slim-bookworm
# (both /usr/local/bin/python3.11). The local cluster builds a matching pair
# with debootstrap (scripts/local-cluster.sh). With PIP_NO_INDEX=1 the build
# installs only from wheels in ./wheels/ (see scripts/build-wheels.sh), for
# builders that cannot reach a package index.
ARG BASE_IMAGE=python:3.11.14-slim-bookworm
ARG BUILD_IMAGE=python:3.11.14-bookworm

FROM ${BUILD_IMAGE} AS build
ARG PIP_NO_INDEX=0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_NO_INDEX=${PIP_NO_INDEX} \
    PIP_FIND_LINKS=/src/wheels
WORKDIR /src
COPY requirements/runtime.txt requirements/build.txt requirements/
COPY wheels/ wheels/
# /opt/venv is what the image ships; /opt/build holds the compiler's side
# (setuptools, mypy) and stays in this stage.
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-deps -r requirements/runtime.txt \
    && python3 -m venv /opt/build \
    && /opt/build/bin/pip install --no-deps -r requirements/runtime.txt -r requirements/build.txt
COPY pyproject.toml setup.py README.md LICENSE ./
COPY _build_backend/ _build_backend/
COPY server/ server/
# KWS_MYPYC=1: setup.py compiles the per-message path with mypyc; a failed compile
# fails the build, and the check after the install (-I: the installed
# package, not /src/server) fails it if the image would run the source.
RUN KWS_MYPYC=1 /opt/build/bin/pip wheel --no-deps --no-build-isolation -w /tmp/dist . \
    && /opt/venv/bin/pip install --no-deps /tmp/dist/*.whl \
    && /opt/venv/bin/python -I -c 'import server.wire as w, server.transport as t; assert w.COMPILED and t.__file__.endswith(".so"), t.__file__' \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib \
    && /opt/venv/bin/pip uninstall -y pip setuptools wheel

# What both images share: the runtime with the installed package.
FROM ${BASE_IMAGE} AS runtime
LABEL org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=8080
COPY --from=build /opt/venv /opt/venv
USER 65532:65532
EXPOSE 8080

# The chat example (examples/chat, `python -m examples.chat`) on the same
# runtime: docker build --target chat -t knative-websocket-chat .
# With WS_BACKPLANE_URL (a Redis URL) its rooms span every pod
# (docs/guides/fan-out-on-a-cluster.md). `python -m` finds examples/ in the
# working directory.
FROM runtime AS chat
LABEL org.opencontainers.image.title="knative-websocket-chat" \
      org.opencontainers.image.description="Chat rooms on knative-websocket-server (examples/chat)"
WORKDIR /opt/app
COPY examples/__init__.py examples/
COPY examples/chat/ examples/chat/
ENTRYPOINT ["python", "-m", "examples.chat"]

# The echo server, the default target (the last stage).
FROM runtime AS server
LABEL org.opencontainers.image.title="knative-websocket-server" \
      org.opencontainers.image.description="Tornado WebSocket echo server for Knative"
ENTRYPOINT ["python", "-m", "server"]
