#!/usr/bin/env bash
# Small benchmark for CI: ci-size trees, one round per contender: throughput, start-up on a small
# tree, and rows/s on issue 22's metric-heavy tree at 0.1 and 1.0 (test_scaling_size). Prints the
# ratio table and FAILS when a gated ratio measured in this session is over its limit (see "The CI
# gate" in bench/README.md): etl-migrate --no-verify against the plain reference and the built-in,
# the default run against --no-verify, and the load's rows/s on the smaller tree against the
# larger, and CPU seconds per row on the larger tree against the smaller. Limits:
# --gate-max-vs-reference, --gate-max-vs-builtin, --gate-max-verify, --gate-max-size-slope,
# --gate-max-size-cpu-slope, or the environment variables ETL_BENCH_GATE_MAX_VS_REFERENCE,
# ETL_BENCH_GATE_MAX_VS_BUILTIN, ETL_BENCH_GATE_MAX_VERIFY, ETL_BENCH_GATE_MAX_SIZE_SLOPE,
# ETL_BENCH_GATE_MAX_SIZE_CPU_SLOPE;
# ETL_BENCH_GATE=0 prints the gate without enforcing it.
#   bench/run_ci.sh [extra pytest args, e.g. --benchmark-json=bench.json]
set -uo pipefail
cd "$(dirname "$0")/.."
export MLFLOW_ALLOW_FILE_STORE=true
PYTHON="${PYTHON:-python}"
if [ -z "${VIRTUAL_ENV:-}" ] && [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; fi
GATE=(--bench-gate)
if [ "${ETL_BENCH_GATE:-1}" = "0" ]; then GATE=(); fi
# Into PostgreSQL only with --no-verify (a server of its own, a new database per round; skipped
# without PostgreSQL's binaries): the load through COPY beside SQLite's, not gated. Not into
# MySQL (its figures are in bench/README.md, measured with -k mysql): CI's time.
"$PYTHON" -m pytest bench/test_throughput.py::test_throughput bench/test_throughput.py::test_start_up \
    bench/test_throughput.py::test_scaling_size \
    -k "not etl-migrate-postgres and not mysql" \
    --bench-size ci --bench-rounds 1 -p no:cacheprovider --benchmark-columns=median,rounds \
    --benchmark-sort=name "${GATE[@]}" "$@"
