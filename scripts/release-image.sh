#!/usr/bin/env bash
# Build the Dockerfile's image, tag it REPOSITORY:VERSION (server.__version__),
# push it, and print its registry digest as `digest=sha256:...`.
#
#   scripts/release-image.sh REPOSITORY [DOCKER_BUILD_ARGS...]
#
# The local release run (scripts/release-local.sh) uses it against the
# loopback registry with the local cluster's dockerd (DOCKER="scripts/
# local-cluster.sh docker", offline build args). The release workflow builds
# with docker/build-push-action instead - both platforms, SBOM and provenance,
# which the classic builder cannot - and pushes the same name and tag.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$#" -ge 1 ] || { echo "usage: $0 REPOSITORY [DOCKER_BUILD_ARGS...]" >&2; exit 2; }
repo=$1
shift
read -r -a docker <<<"${DOCKER:-docker}"
version=$(python3 scripts/release_meta.py version)
image=$repo:$version
log() { printf '==> [release-image] %s\n' "$*" >&2; }

log "building $image"
"${docker[@]}" build -q -t "$image" "$@" . >/dev/null
log "pushing $image"
"${docker[@]}" push "$image" >&2
# The digest the registry now serves for this repository (RepoDigests lists
# one entry per repository the image was pushed to).
digest=$("${docker[@]}" image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$image" |
  awk -F@ -v r="$repo" '$1 == r {print $2; exit}')
[[ "$digest" =~ ^sha256:[0-9a-f]{64}$ ]] || { echo "release-image: no digest for $repo after the push" >&2; exit 1; }
log "pushed $repo@$digest"
echo "digest=$digest"
