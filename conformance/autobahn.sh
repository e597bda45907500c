#!/usr/bin/env bash
# RFC 6455 / RFC 7692 conformance: the Autobahn Testsuite's fuzzing client
# runs every case of every section (1-13) against a real `python -m server`
# on loopback, and conformance/summary.py fails the run on any case whose
# behaviour is FAILED or UNIMPLEMENTED.
#
#   conformance/autobahn.sh            # set up (once) and run, ~5 minutes
#   AUTOBAHN_CASES='7.*' conformance/autobahn.sh   # some cases only
#
# The server runs with its defaults except: a 64 MiB message limit (section
# 9 sends 16 MiB messages; the default is 1 MiB), permessage-deflate on
# (sections 12 and 13), and message events off (millions of lines).
# Autobahn runs on Python 2.7 only: this script builds a 2.7 virtualenv in
# .autobahn/ from pyenv's 2.7.18 (or $PYTHON27) with the exact pins of
# conformance/requirements-py27.txt, or runs it in the $AUTOBAHN_IMAGE
# container (python:2.7 in GitHub Actions). Reports: .autobahn/reports/index.html.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '==> [autobahn] %s\n' "$*" >&2; }
state=.autobahn
mkdir -p "$state"

find_python27() {
  if [ -n "${PYTHON27:-}" ]; then echo "$PYTHON27"; return; fi
  local root
  root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
  for candidate in "$root"/versions/2.7.*/bin/python "$(command -v python2.7 || true)"; do
    if [ -x "$candidate" ]; then echo "$candidate"; return; fi
  done
  echo "no Python 2.7 found: install it with pyenv (pyenv install 2.7.18) or set PYTHON27" >&2
  exit 1
}

# -- set up: a 2.7 virtualenv with the pinned suite (skipped when up to date),
#    or, with AUTOBAHN_IMAGE set (GitHub runners have no Python 2.7), a
#    python:2.7 container that installs the same pins on each run.
stamp=$state/py27/.requirements
if [ -n "${AUTOBAHN_IMAGE:-}" ]; then
  cp conformance/requirements-py27.txt "$state/requirements-py27.txt"
elif ! cmp -s conformance/requirements-py27.txt "$stamp" 2>/dev/null; then
  python27=$(find_python27)
  log "building $state/py27 from $("$python27" --version 2>&1) ($python27)"
  rm -rf "$state/tool" "$state/py27"
  python3 -m venv "$state/tool"
  # The last virtualenv that can still create a Python 2.7 environment.
  "$state/tool/bin/pip" install -q --disable-pip-version-check 'virtualenv==20.21.1'
  "$state/tool/bin/virtualenv" -q -p "$python27" "$state/py27"
  "$state/py27/bin/pip" install -q --disable-pip-version-check --no-python-version-warning \
    -r conformance/requirements-py27.txt 2>&1 | grep -v -e '^WARNING: Url' -e DEPRECATION >&2 || true
  "$state/py27/bin/wstest" --help >/dev/null
  cp conformance/requirements-py27.txt "$stamp"
fi

wstest() {
  if [ -n "${AUTOBAHN_IMAGE:-}" ]; then
    docker run --rm --network host -v "$PWD/$state:/autobahn" -w /autobahn "$AUTOBAHN_IMAGE" \
      sh -c 'pip install -q --disable-pip-version-check -r requirements-py27.txt && wstest "$@"' \
      wstest "$@"
  else
    (cd "$state" && py27/bin/wstest "$@")
  fi
}

# -- the server under test
port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
PORT=$port WS_HOST=127.0.0.1 WS_MAX_MESSAGE_BYTES=67108864 WS_MAX_BACKLOG=69206016 WS_COMPRESSION=true \
  WS_LOG_MESSAGES=false .venv/bin/python -m server >"$state/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
.venv/bin/python -m server.probe "ws://127.0.0.1:$port/ws" --retry-for 20 >/dev/null

# -- the fuzzing client
rm -rf "$state/reports"
.venv/bin/python - "$port" "$state/fuzzingclient.json" <<'PY'
import json, os, sys
port, path = sys.argv[1], sys.argv[2]
spec = {
    "outdir": "./reports",
    "servers": [{"agent": "knative-websocket-server", "url": f"ws://127.0.0.1:{port}/ws"}],
    "cases": os.environ.get("AUTOBAHN_CASES", "*").split(),
    "exclude-cases": os.environ.get("AUTOBAHN_EXCLUDE", "").split(),
    "exclude-agent-cases": {},
}
with open(path, "w") as f:
    json.dump(spec, f, indent=2)
PY
log "fuzzing ws://127.0.0.1:$port/ws (cases: ${AUTOBAHN_CASES:-*}; excluded: ${AUTOBAHN_EXCLUDE:-none})"
started=$SECONDS
wstest -m fuzzingclient -s fuzzingclient.json >"$state/wstest.log" 2>&1 || {
  tail -n 30 "$state/wstest.log" >&2
  exit 1
}
log "done in $((SECONDS - started)) s"

# The server must have come through all of it alive, and still drain cleanly.
if ! kill -0 "$server" 2>/dev/null; then
  log "the server died during the run; its log:"
  tail -n 50 "$state/server.log" >&2
  exit 1
fi
kill -TERM "$server"
wait "$server" || { log "server exited with $?"; tail -n 20 "$state/server.log" >&2; exit 1; }
trap - EXIT
.venv/bin/python conformance/summary.py "$state/reports/index.json"
