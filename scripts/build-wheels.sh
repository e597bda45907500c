#!/usr/bin/env bash
# Fill wheels/ with everything the Dockerfile installs, for an image build
# that cannot reach a package index (docker build --build-arg PIP_NO_INDEX=1):
# the runtime pins and the build backend. Uses this machine's pip, so the
# wheels match an image with the same Python minor and architecture.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
rm -f wheels/*.whl
"$python" -m pip download -q --disable-pip-version-check --only-binary=:all: --no-deps \
  -d wheels -r requirements/runtime.txt
"$python" -m pip download -q --disable-pip-version-check --only-binary=:all: --no-deps \
  -d wheels 'setuptools>=77'
ls wheels/*.whl
