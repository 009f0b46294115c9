#!/usr/bin/env bash
# The test suite: import contracts, then unit, integration and end-to-end tests on real services.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${FRESHREC_VENV:-.venv}"
export TF_USE_LEGACY_KERAS=1 PYTHONUNBUFFERED=1
echo "== import contracts (import-linter)"
"$venv/bin/lint-imports"
echo "== types (mypy over stages, flows, infra)"
"$venv/bin/mypy"
echo "== tests"
"$venv/bin/pytest" "$@"
