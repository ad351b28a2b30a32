#!/usr/bin/env bash
# Runs the test suite: installs what it needs first (scripts/setup.sh, idempotent), then
# ruff and pytest. Kernel tests need root; without it they skip with the reason.
# The full QEMU kernel matrix is `make kernel-matrix`; this runs its one-kernel smoke.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
set +e
.venv/bin/pytest -q "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
  echo "test.sh: pytest collected no tests — that is a failure" >&2
  exit 1
fi
exit $rc
