#!/usr/bin/env bash
# Re-resolve requirements/ci.txt: the exact versions CI installs.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
"$venv/bin/pip" install -q -e ".[test,e2e,lint,bench,docs]"
{
  echo "# Exact versions CI installs (scripts/setup.sh): the resolved set of"
  echo "# pip install -e '.[test,e2e,lint,bench,docs]' on Python 3.11. Regenerate with scripts/lock.sh."
  # Pins a marker leaves out on this Python (async-timeout before 3.11.3,
  # which the image's Debian Python needs) are resolved here all the same.
  "$venv/bin/pip" install -q "async-timeout>=4.0.3"
  "$venv/bin/pip" freeze --exclude-editable | grep -v '^-e'
} > requirements/ci.txt
echo "wrote requirements/ci.txt"
