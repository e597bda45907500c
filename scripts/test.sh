#!/usr/bin/env bash
# The whole test suite, from a fresh machine: set up, lint, run every test -
# unit, integration, reliability, manifests and e2e - with the e2e suite on
# the local single-node Kubernetes (scripts/with-local-cluster.sh; the first
# run builds Kubernetes, about 15 minutes, later runs reuse the cache), then
# the documentation site (scripts/docs.sh: built strict, links checked) and
# the Autobahn conformance run (conformance/autobahn.sh, about 12 minutes).
#
# Then the tests again with the wire core compiled (mypyc; SKIP_COMPILED=1
# leaves that out), and the fast suite (scripts/test-fast.sh) on each other
# Python version the package claims (EXTRA_PYTHONS, below).
# SKIP_LOCAL_CLUSTER=1 leaves the cluster out (the e2e tests then skip with
# the reason); the cluster needs root on Debian 12. SKIP_CONFORMANCE=1 leaves
# Autobahn out. Extra arguments go to pytest (e.g. scripts/test.sh -k drain).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/lint.sh
export PATH="$PWD/.tools/bin:$PWD/tools/node_modules/.bin:$PATH"
pytest=(.venv/bin/python -m pytest "$@")
status=0
if [ "${SKIP_LOCAL_CLUSTER:-0}" = 1 ]; then
  "${pytest[@]}" || status=$?
else
  scripts/with-local-cluster.sh "${pytest[@]}" || status=$?
fi
# The same tests (all but the reliability suite and the cluster) once more
# with the wire core compiled by mypyc (scripts/build-speedups.sh); the run
# above used the pure-Python source. SKIP_COMPILED=1 leaves this out.
if [ "${SKIP_COMPILED:-0}" != 1 ]; then
  printf '==> the test suite again, with server/wire compiled (mypyc)\n'
  if scripts/build-speedups.sh; then
    WS_EXPECT_COMPILED_WIRE=1 .venv/bin/python -m pytest tests -m "not reliability" -q \
      -p no:cacheprovider "$@" || status=$?
  else
    status=1
  fi
  scripts/build-speedups.sh --clean
fi
# The fast suite (scripts/test-fast.sh: all but the reliability suite, the
# cluster, Chromium, the package builds and the live Prometheus) on every
# other Python version pyproject.toml claims (tests/test_python_versions.py
# keeps this list, the classifiers, the README and the CI matrix in step),
# each in its own virtualenv (.venv-3.12, ...) with requirements/ci.txt's
# pins. The interpreter is pyenv's newest 3.X.* or python3.X on PATH; a
# missing one fails the run. Measured 2026-12-06 on 2 shared cores: the
# fast suite took 148 s on pyenv's 3.12.1 and 177 s on 3.13.0 (about 5.5
# minutes for both), plus 70-80 s of pip per version when its virtualenv
# is new (later runs reuse it). EXTRA_PYTHONS="" leaves it out (the GitHub
# CI runs these versions in ci.yaml's matrix instead).
EXTRA_PYTHONS=${EXTRA_PYTHONS-3.12 3.13}
python_for() {
  local found
  found=$(find "${PYENV_ROOT:-$HOME/.pyenv}/versions" -maxdepth 1 -name "$1.*" 2>/dev/null |
    grep -E "/$1\.[0-9]+$" | sort -V | tail -n 1 || true)
  if [ -n "$found" ] && [ -x "$found/bin/python" ]; then
    echo "$found/bin/python"
  elif "python$1" -c pass 2>/dev/null; then
    command -v "python$1"
  fi
}
for version in $EXTRA_PYTHONS; do
  python=$(python_for "$version")
  if [ -z "$python" ]; then
    echo "no Python $version (pyenv or python$version on PATH) for the fast suite" >&2
    status=1
    continue
  fi
  venv=.venv-$version
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r requirements/ci.txt
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e .
  VENV=$venv scripts/test-fast.sh "$@" || status=$?
done
# The documentation site: generated tables current, mkdocs build --strict,
# every link and anchor inside the built site (scripts/docs.sh; offline).
scripts/docs.sh || status=$?
if [ "${SKIP_CONFORMANCE:-0}" != 1 ]; then
  conformance/autobahn.sh || status=$?
fi
exit "$status"
