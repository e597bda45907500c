#!/usr/bin/env bash
# The release workflow's steps, run here against the loopback registry
# (scripts/registry.sh) and the local cluster's dockerd: version checks,
# image build and push, the chart packaged with that digest and pushed as an
# OCI artifact, pulled back and checked, and the release notes (a dry run).
# Signing is left to GitHub (it needs the workflow's OIDC identity).
#
# Writes what it published to $KWS_STATE/release.env (REGISTRY, VERSION,
# IMAGE, DIGEST, CHART, CHART_DIGEST, REGISTRY_LOG, and NODE_DOCKER: the docker
# client of the node's dockerd) for e2e/test_registry.py.
#
# scripts/with-local-cluster.sh runs it after `scripts/registry.sh up`.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=${KWS_STATE:-/run/kws}
log() { printf '==> [release-local %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
export PATH="$PWD/.tools/bin:$PATH"
registry=$(scripts/registry.sh addr)
names=$(python3 scripts/release_meta.py names --registry "$registry")
version=$(sed -n 's/^version=//p' <<<"$names")
image=$(sed -n 's/^image=//p' <<<"$names")
charts=$(sed -n 's/^charts=//p' <<<"$names")

log "version checks (scripts/release_meta.py check, chart-bump)"
python3 scripts/release_meta.py check --tag "v$version"
python3 scripts/release_meta.py chart-bump

log "image: the Dockerfile, built offline in the cluster's dockerd, pushed to $registry"
compgen -G 'wheels/*.whl' >/dev/null || PYTHON=${PYTHON:-.venv/bin/python} scripts/build-wheels.sh >/dev/null
# The labels a release build sets; `created` also gives every run a digest
# of its own, so the node's dockerd (which caches manifests by digest) has
# to fetch this one from the registry.
digest=$(DOCKER="scripts/local-cluster.sh docker" DOCKER_BUILDKIT=0 scripts/release-image.sh "$image" \
  --build-arg BASE_IMAGE=kws.local/python:bookworm \
  --build-arg BUILD_IMAGE=kws.local/python-build:bookworm --build-arg PIP_NO_INDEX=1 \
  --label "org.opencontainers.image.version=$version" \
  --label "org.opencontainers.image.revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  --label "org.opencontainers.image.created=$(date -u +%Y-%m-%dT%H:%M:%SZ)" |
  sed -n 's/^digest=//p')
# Forget the pushed names locally: the kubelet must fetch the image from the
# registry, by digest, not find it under these names in dockerd.
for ref in "$image:$version" "$image@$digest"; do
  scripts/local-cluster.sh docker rmi "$ref" >/dev/null 2>&1 || true
  if scripts/local-cluster.sh docker image inspect "$ref" >/dev/null 2>&1; then
    echo "release-local: dockerd still knows $ref after docker rmi" >&2
    exit 1
  fi
done

log "chart: packaged with $image@$digest pinned, pushed to oci://$charts"
out=$(scripts/release-chart.sh "$image" "$digest" "$charts" "$STATE/release-dist")
chart=$(sed -n 's/^chart=//p' <<<"$out")
chart_digest=$(sed -n 's/^chart_digest=//p' <<<"$out")

log "pull: $chart --version $version"
pulled=$(helm show values "$chart" --version "$version" --plain-http 2>/dev/null)
grep -qx "  digest: $digest" <<<"$pulled" || { echo "release-local: the pulled chart does not pin $digest" >&2; exit 1; }
grep -qx "  repository: $image" <<<"$pulled" || { echo "release-local: the pulled chart does not name $image" >&2; exit 1; }

log "release notes (scripts/release-github.sh, dry run)"
RELEASE_DRY_RUN=1 scripts/release-github.sh "$version" "$STATE/release-dist/knative-websocket-server-$version.tgz"

cat >"$STATE/release.env" <<ENV
REGISTRY=$registry
VERSION=$version
IMAGE=$image
DIGEST=$digest
CHART=$chart
CHART_DIGEST=$chart_digest
REGISTRY_LOG=$STATE/registry.log
NODE_DOCKER=scripts/local-cluster.sh docker
ENV
log "published: $image@$digest and $chart:$version ($STATE/release.env)"
