#!/usr/bin/env bash
# Small benchmark for CI: ci-size trees, one round per contender, no x10 tree.
# Prints the ratio table; fails only if something crashes (timings are never asserted).
#   bench/run_ci.sh [extra pytest args, e.g. --benchmark-json=bench.json]
set -uo pipefail
cd "$(dirname "$0")/.."
export MLFLOW_ALLOW_FILE_STORE=true
PYTHON="${PYTHON:-python}"
if [ -z "${VIRTUAL_ENV:-}" ] && [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; fi
"$PYTHON" -m pytest bench --bench-size ci --bench-rounds 1 -p no:cacheprovider \
    --benchmark-columns=median,rounds --benchmark-sort=name "$@"
