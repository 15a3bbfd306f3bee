#!/usr/bin/env bash
# The cross-version matrix, one script for .ci/run and .github/workflows/migration-tests.yml:
#   fixtures   the fixture trees of each MLflow era (full size), made with uv by
#              scripts/mlflow_eras.py (which holds each era's Python and pins, and keeps the trees
#              in a cache: a run after the first copies them)
#   newest     the suite on the newest supported MLflow, integration tests on every fixture tree
#   fixture-tests  only the fixture-tree integration tests, on the newest MLflow (for .ci/run,
#              which has just run the whole suite on the newest MLflow through the README line)
#   oldest     the suite on the oldest supported MLflow, integration tests on every fixture tree
# Usage: scripts/ci_matrix.sh [fixtures|newest|fixture-tests|oldest|all]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."

OLDEST_MLFLOW=3.10.1
FIXTURES=${FIXTURES:-.ci-work/fixtures}
# The eras: MLflow 1.0.0; 1.20.2 (runs without a name) and 1.30.1, each upgraded by a 2.x that adds
# its model registry to the same tree (2.9.2, 2.1.1); 2.22.5, 3.2.0, 3.17.2.
ERAS=$(uv run --quiet --no-project python scripts/mlflow_eras.py ci | tr -d "\r")  # Windows: CRLF

fixtures() {
  mkdir -p "$FIXTURES"
  local era
  for era in $ERAS; do
    rm -rf "$FIXTURES/mlflow-$era"
    echo "== fixture tree: MLflow $era"
    uv run --quiet --no-project python scripts/mlflow_eras.py tree "$era" "$FIXTURES/mlflow-$era" || exit 1
  done
}

fixture_args() {
  local era
  for era in $ERAS; do printf -- "--fixtures-dir %s " "$FIXTURES/mlflow-$era"; done
}

newest() {
  echo "== suite on the newest MLflow, integration tests on every fixture tree"
  # shellcheck disable=SC2046
  uv run --extra test pytest tests $(fixture_args)
}

fixture_tests() {
  echo "== fixture-tree integration tests on the newest MLflow"
  # shellcheck disable=SC2046
  uv run --extra test pytest tests/integration/test_fixture_trees.py $(fixture_args)
  echo "== every era's fixture tree merged into one database (the rest of that file ran in the suite)"
  # shellcheck disable=SC2046
  uv run --extra test pytest tests/integration/test_several_sources.py $(fixture_args) \
    -k "change_listed or through_the_maps"
}

oldest() {
  echo "== suite on MLflow $OLDEST_MLFLOW (oldest supported)"
  uv venv --quiet --allow-existing .ci-work/venv-oldest
  uv pip install --quiet -p .ci-work/venv-oldest -e ".[test]" "mlflow==$OLDEST_MLFLOW"
  local python=.ci-work/venv-oldest/bin/python
  [[ -x $python ]] || python=.ci-work/venv-oldest/Scripts/python.exe  # Windows venv layout
  # The PostgreSQL target's refusals, kill -9 and live-server tests ran in the newest pass and
  # do not depend on MLflow's version; here the fixture-tree tests still migrate every era into
  # PostgreSQL through this MLflow's schema, and test_postgres_schema holds this MLflow's recorded
  # schema against its migrations. Every era's tree merged into one database ran in the
  # fixture-tests step; here the several-trees tests take their own small trees (made by this
  # MLflow). Likewise the MySQL target's kill -9, collation and refusal tests (the server's
  # doing, whatever MLflow's version) and its core-tree test (the fixture trees go the same way);
  # its schema, live server and fixture-tree tests run here too (this MLflow's schema and trigger
  # differ). The damage, crash, signal and promotion tests (tests/faults) and the terminal output
  # test are our code's handling of bad input, bad days and terminals, whatever MLflow's
  # version: the newest pass runs them. (Keeps .ci/run within its time budget.)
  # shellcheck disable=SC2046
  "$python" -m pytest -p no:cacheprovider tests $(fixture_args) --ignore=tests/faults \
    --ignore=tests/integration/test_terminal_output.py \
    --ignore=tests/integration/test_postgres_target.py \
    --ignore=tests/integration/test_several_sources.py --ignore=tests/integration/test_mysql_keys.py \
    --deselect tests/integration/test_mysql_target.py::test_core_tree_into_mariadb \
    --deselect tests/integration/test_mysql_target.py::test_targets_refused_before_anything_is_made
  "$python" -m pytest -p no:cacheprovider tests/integration/test_several_sources.py \
    -k "sqlite and (change_listed or through_the_maps)"
}

case "${1:-all}" in
  fixtures) fixtures ;;
  newest) newest ;;
  fixture-tests) fixture_tests ;;
  oldest) oldest ;;
  all) fixtures; newest; oldest ;;
  *) echo "usage: $0 [fixtures|newest|fixture-tests|oldest|all]" >&2; exit 2 ;;
esac
