#!/usr/bin/env bash
# The whole test suite, from a fresh machine: set up, lint, test.
# Extra arguments go to pytest (e.g. scripts/test.sh -k drain).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/lint.sh
export PATH="$PWD/.tools/bin:$PWD/tools/node_modules/.bin:$PATH"
printf '==> pytest\n'
.venv/bin/python -m pytest "$@"
