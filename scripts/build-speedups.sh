#!/usr/bin/env bash
# Compile the sans-I/O core (server/wire.py) with mypyc, in place: Python
# then imports server/wire.*.so instead of server/wire.py, which stays the
# source and the fallback (remove the .so files to go back: --clean).
# Needs gcc and the Python headers; mypy (which ships mypyc) is pinned in
# requirements/ci.txt.
#   scripts/build-speedups.sh          # compile
#   scripts/build-speedups.sh --clean  # back to pure Python
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
rm -f server/wire.*.so server/wire__mypyc.*.so
rm -rf build/mypyc
if [ "${1:-}" = --clean ]; then
  exit 0
fi
# In a scratch folder: mypyc's build reads the pyproject.toml of the folder
# it runs in, and only the module and what it imports are needed.
python=$(cd "$(dirname "$python")" && pwd)/$(basename "$python")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/server"
cp server/__init__.py server/wire.py server/mask.py "$work/server/"
(cd "$work" && MYPYC_OPT_LEVEL=3 "$python" -m mypyc server/wire.py >/dev/null)
cp "$work"/server/wire*.so server/
"$python" -c 'import server.wire as w; assert w.COMPILED, w.__file__; print("==> server/wire compiled:", w.__file__)'
