#!/usr/bin/env bash
# Sign pushed artifacts with cosign, keyless: the certificate names the
# GitHub workflow that ran (its OIDC token, `id-token: write`), and the
# signature goes to the registry beside each artifact. Only the release
# workflow signs (the local release run has no such identity).
#
#   scripts/release-sign.sh REPOSITORY@sha256:... [...]
#
# Verify (docs/guides/knative.md: Verify a signature):
#   cosign verify REPOSITORY@sha256:... \
#     --certificate-identity-regexp '^https://github.com/OWNER/REPO/\.github/workflows/release\.yaml@refs/tags/v' \
#     --certificate-oidc-issuer https://token.actions.githubusercontent.com
set -euo pipefail
[ "$#" -ge 1 ] || { echo "usage: $0 REPOSITORY@sha256:DIGEST..." >&2; exit 2; }
command -v cosign >/dev/null 2>&1 || { echo "release-sign: cosign is not installed (the release workflow installs it)" >&2; exit 1; }
for ref in "$@"; do
  [[ "$ref" =~ @sha256:[0-9a-f]{64}$ ]] || { echo "release-sign: sign by digest, not $ref" >&2; exit 2; }
  printf '==> [release-sign] %s\n' "$ref" >&2
  cosign sign --yes "$ref"
done
