# Redis for e2e/test_backplane.py on kind (scripts/kind-load.sh builds it,
# with no build context: docker build -t IMAGE - < e2e/redis.Dockerfile).
# Debian's redis-server, as in the local cluster's kws.local/redis:bookworm
# (scripts/local-cluster.sh, debootstrap), so e2e/redis.yaml runs
# /usr/bin/redis-server in both. A test fixture, not for production.
FROM debian:bookworm-slim
# Debian's security updates replace the package version: pinning it would
# break the build at the next one.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/*
USER 65532:65532
ENTRYPOINT ["/usr/bin/redis-server"]
