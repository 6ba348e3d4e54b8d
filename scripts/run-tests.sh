#!/usr/bin/env bash
# Runs the test suite. pytest exits 5 when it collected no test: that is a failure here, never
# a silent pass.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest "$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "run-tests: pytest collected no tests; failing." >&2
  exit 1
fi
exit "$status"
