#!/usr/bin/env bash
# Fill wheels/ with everything the Dockerfile installs, for an image build
# that cannot reach a package index (docker build --build-arg PIP_NO_INDEX=1):
# the runtime pins, and what the build stage compiles the wire core with
# (requirements/build.txt: setuptools, mypy and its dependencies). Uses this
# machine's pip, so the wheels match an image with the same Python minor and
# architecture.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
rm -f wheels/*.whl
"$python" -m pip download -q --disable-pip-version-check --only-binary=:all: --no-deps \
  -d wheels -r requirements/runtime.txt -r requirements/build.txt
ls wheels/*.whl
