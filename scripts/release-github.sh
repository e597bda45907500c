#!/usr/bin/env bash
# Create the GitHub release for tag vVERSION, its notes CHANGELOG.md's
# section for VERSION, with ASSETS attached (the packaged chart).
#
#   scripts/release-github.sh VERSION [ASSETS...]
#
# Needs the GitHub CLI and GH_TOKEN (the release workflow has both). With
# RELEASE_DRY_RUN=1 (the local release run) it prints the notes and the
# command instead.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$#" -ge 1 ] || { echo "usage: $0 VERSION [ASSETS...]" >&2; exit 2; }
version=${1#v}
shift
notes=$(mktemp)
trap 'rm -f "$notes"' EXIT
python3 scripts/release_meta.py notes "$version" >"$notes"
cmd=(gh release create "v$version" --verify-tag --title "v$version" --notes-file "$notes" "$@")
if [ "${RELEASE_DRY_RUN:-0}" = 1 ]; then
  printf '==> [release-github] dry run: %s\n' "${cmd[*]}" >&2
  sed 's/^/    | /' "$notes" >&2
  exit 0
fi
"${cmd[@]}"
