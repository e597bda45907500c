#!/usr/bin/env bash
# Compile the per-message path with mypyc, in place: the sans-I/O core
# (server/wire.py), the send queue (server/sendqueue.py) and the transport
# (server/transport.py), as one group (server/speedups__mypyc.*.so), so
# their calls to each other are native calls. Python then imports the .so
# files instead of the .py files, which stay the source and the fallback
# (remove the .so files to go back: --clean). setup.py builds the same for
# a wheel (KWS_MYPYC=1).
# Needs gcc and the Python headers; mypy (which ships mypyc) is pinned in
# requirements/ci.txt.
#   scripts/build-speedups.sh          # compile
#   scripts/build-speedups.sh --clean  # back to pure Python
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
modules=(wire sendqueue transport)
for module in "${modules[@]}"; do rm -f "server/$module".*.so; done
rm -f server/wire__mypyc.*.so server/speedups__mypyc.*.so
rm -rf build/mypyc
if [ "${1:-}" = --clean ]; then
  exit 0
fi
# In a scratch folder: mypyc's build reads the pyproject.toml of the folder
# it runs in, and only the modules and what they import are needed.
python=$(cd "$(dirname "$python")" && pwd)/$(basename "$python")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/server"
cp server/__init__.py server/wire.py server/mask.py server/sendqueue.py server/transport.py \
  server/kinds.py server/tcp.py "$work/server/"
(cd "$work" && "$python" -c 'from setuptools import setup
from mypyc.build import mypycify
paths = ["server/wire.py", "server/sendqueue.py", "server/transport.py"]
setup(ext_modules=mypycify(paths, opt_level="3", group_name="server.speedups"))' \
  build_ext --inplace >/dev/null)
cp "$work"/server/*.so server/
"$python" -c 'import server.wire as w, server.sendqueue as q, server.transport as t
for m in (w, q, t):
    assert m.__file__.endswith(".so"), m.__file__
    print("==> compiled:", m.__file__)'
