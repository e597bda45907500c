#!/usr/bin/env bash
# Build the documentation site and check it (scripts/test.sh and
# .github/workflows/docs.yml run this; see docs/contributing/docs.md):
#   1. every generated table is current (scripts/gen_docs.py --check);
#   2. mkdocs build --strict: a broken link or anchor, a page missing from
#      the nav, a bad mkdocstrings reference fails (validation: in mkdocs.yml);
#   3. LinkChecker walks the built site on disk and checks every internal
#      link and anchor (nothing outside the site is fetched: it runs offline).
#
#   scripts/docs.sh                    # all three; the site is in site/
#   scripts/docs.sh serve              # live preview at http://127.0.0.1:8000
#   scripts/docs.sh check-links DIR    # step 3 alone, on a built site in DIR
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON_VENV:-.venv}/bin/python
export NO_MKDOCS_2_WARNING=1
copy=""
trap '[ -z "$copy" ] || rm -rf "$copy"' EXIT

check_links() {
  local dir=$1
  if [ "$(id -u)" -eq 0 ]; then
    # Run as root, LinkChecker reads as nobody (it always drops root's
    # privileges), who may not reach the checkout: check a copy in a
    # directory anyone can read.
    copy=$(mktemp -d)
    cp -R "$dir/." "$copy"
    chmod -R a+rX "$copy"
    dir=$copy
  fi
  "$py" -m linkcheck --config scripts/linkcheckerrc --no-status "$dir/index.html"
}

case "${1:-build}" in
  serve)
    exec "$py" -m mkdocs serve
    ;;
  check-links)
    check_links "${2:?a built site directory}"
    ;;
  build)
    echo "==> generated tables (scripts/gen_docs.py --check)"
    "$py" scripts/gen_docs.py --check
    echo "==> mkdocs build --strict"
    "$py" -m mkdocs build --strict --clean --site-dir site
    echo "==> links inside the site (LinkChecker)"
    check_links site
    echo "==> docs ok: site/"
    ;;
  *)
    echo "usage: $0 [build | serve | check-links DIR]" >&2
    exit 2
    ;;
esac
