#!/usr/bin/env bash
# Package the chart with the released image pinned by digest, and push it
# as an OCI artifact: oci://CHARTS/knative-websocket-server, version
# server.__version__.
#
#   scripts/release-chart.sh IMAGE_REPOSITORY DIGEST CHARTS [OUT_DIR]
#   e.g. scripts/release-chart.sh ghcr.io/o/knative-websocket-server sha256:... ghcr.io/o/charts
#
# The packaged values.yaml names IMAGE_REPOSITORY and DIGEST, so a plain
# `helm install oci://... --version X` runs exactly the pushed image. A
# loopback registry (127.*, localhost) is spoken to over plain HTTP. With
# REGISTRY_USER and REGISTRY_PASSWORD set it logs in first (the workflow).
# Prints chart=, version= and chart_digest= lines; the .tgz stays in OUT_DIR
# (default dist/).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$#" -ge 3 ] || { echo "usage: $0 IMAGE_REPOSITORY DIGEST CHARTS [OUT_DIR]" >&2; exit 2; }
image_repo=$1 digest=$2 charts=${3%/} out=${4:-dist}
[[ "$digest" =~ ^sha256:[0-9a-f]{64}$ ]] || { echo "release-chart: $digest is not sha256:<64 hex>" >&2; exit 2; }
helm=${HELM:-helm}
[ -x .tools/bin/helm ] && [ -z "${HELM:-}" ] && helm=.tools/bin/helm
version=$(python3 scripts/release_meta.py version)
log() { printf '==> [release-chart] %s\n' "$*" >&2; }
host=${charts%%/*}
plain=()
case "$host" in 127.* | localhost | localhost:*) plain=(--plain-http) ;; esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r chart "$work/chart"
# Pin the image in the packaged defaults: exactly one repository and one
# digest line under `image:`, checked by rendering below.
python3 - "$work/chart/values.yaml" "$image_repo" "$digest" <<'PY'
import re, sys
path, repo, digest = sys.argv[1:]
text = open(path).read()
text, n1 = re.subn(r"(?m)^(  repository: ).*$", lambda m: m.group(1) + repo, text, count=1)
text, n2 = re.subn(r'(?m)^(  digest: )"".*$', lambda m: m.group(1) + digest, text, count=1)
if (n1, n2) != (1, 1):
    sys.exit(f"release-chart: values.yaml has no image.repository/image.digest line to pin ({n1}, {n2})")
open(path, "w").write(text)
PY
rendered=$("$helm" template release "$work/chart" --set mode=kubernetes | grep -E '^\s+image: ' | sort -u)
expected="image: $image_repo@$digest"
if [ "$(echo "$rendered" | sed 's/^ *//' | sort -u)" != "$expected" ]; then
  echo "release-chart: the packaged chart renders '$rendered', not '$expected'" >&2
  exit 1
fi
"$helm" lint --strict "$work/chart" >/dev/null
mkdir -p "$out"
"$helm" package "$work/chart" -d "$out" >/dev/null
tgz=$out/knative-websocket-server-$version.tgz
[ -f "$tgz" ] || { echo "release-chart: $tgz was not made" >&2; exit 1; }
if [ -n "${REGISTRY_USER:-}" ] && [ -n "${REGISTRY_PASSWORD:-}" ]; then
  printf '%s' "$REGISTRY_PASSWORD" | "$helm" registry login "$host" -u "$REGISTRY_USER" --password-stdin
fi
log "pushing $tgz to oci://$charts"
pushed=$("$helm" push "$tgz" "oci://$charts" "${plain[@]}" 2>&1) || { echo "$pushed" >&2; exit 1; }
echo "$pushed" >&2
chart_digest=$(echo "$pushed" | awk '$1 == "Digest:" {print $2}')
echo "chart=oci://$charts/knative-websocket-server"
echo "version=$version"
echo "chart_digest=$chart_digest"
echo "package=$tgz"
