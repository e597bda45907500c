#!/usr/bin/env bash
# The fast suite: every test in tests/ except the reliability suite, the
# cluster, the Chromium console tests (tests/test_clients.py), the package
# builds (tests/test_packaging.py, tests/test_speedups.py: pip, setuptools
# and mypyc, about a minute) and the live Prometheus dashboard
# (tests/test_dashboard_live.py, about 40 s). It is what runs on each Python
# version the package claims besides the one the whole suite runs on
# (scripts/test.sh, the CI matrix in .github/workflows/ci.yaml): about
# 1040 tests in 2.5 to 3 minutes on 2 cores (148 s on 3.12.1, 177 s on
# 3.13.0, 2026-12-06).
#
# VENV names the virtualenv to run it in (default .venv: scripts/setup.sh,
# which takes its Python from $PYTHON). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.tools/bin:$PWD/tools/node_modules/.bin:$PATH"
venv=${VENV:-.venv}
printf '==> the fast suite on %s\n' "$("$venv/bin/python" --version)"
exec "$venv/bin/python" -m pytest tests -q -p no:cacheprovider \
  -m "not reliability and not cluster" \
  --ignore=tests/test_reliability.py \
  --ignore=tests/test_clients.py \
  --ignore=tests/test_packaging.py \
  --ignore=tests/test_speedups.py \
  --ignore=tests/test_dashboard_live.py \
  "$@"
