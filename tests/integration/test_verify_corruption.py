"""The verifier catches one wrong field in one row, for every entity family, and names it.

A fixture tree (every entity the installed MLflow can make) is migrated once; each case copies
the database, changes exactly one field of one row with SQL, and runs `etl-migrate verify`: the
report must hold exactly one mismatch, naming that entity, id and field.
"""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest

from tests.conftest import generate_fixture_tree, run_cli

pytestmark = pytest.mark.slow

# table, the row (SQL condition), the column and how to change it, and what the report must say:
# entity, a function of the row giving the id, and the field (None: the row's key column).
CASES = {
    "experiment": ("experiments", "name LIKE 'fx-%'", "name", "name || '-x'", "experiments", "experiment_id", "name"),
    "experiment_tag": ("experiment_tags", "key LIKE 'fx.%'", "value", "value || '-x'", "experiments", "experiment_id", "key"),
    "run": ("runs", "status = 'FINISHED'", "end_time", "end_time + 1", "runs", "run_uuid", "end_time"),
    "param": ("params", "key LIKE 'p%'", "value", "value || '-x'", "params", "run_uuid", "key"),
    "run_tag": ("tags", "key LIKE 'fx.%'", "value", "value || '-x'", "tags", "run_uuid", "key"),
    "metric": ("metrics", "step = 1 AND is_nan = 0 AND abs(value) < 1e300", "value", "value + 1", "metrics", "run_uuid||'/'||key", None),
    "latest_metric": ("latest_metrics", "is_nan = 0 AND abs(value) < 1e300", "value", "value + 1", "latest_metrics", "run_uuid", "key"),
    "dataset": ("datasets", "1", "dataset_profile", "'{}'", "datasets", None, "profile"),
    "input_tag": ("input_tags", "1", "value", "value || '-x'", "inputs", None, "dataset_inputs"),
    "trace": ("trace_info", "execution_time_ms IS NOT NULL", "execution_time_ms", "execution_time_ms + 1", "traces", "request_id", "execution_duration"),
    "trace_tag": ("trace_tags", "key LIKE 'fx.%'", "value", "value || '-x'", "traces", "request_id", "key"),
    "trace_metadata": ("trace_request_metadata", "key LIKE 'fx.%'", "value", "value || '-x'", "traces", "request_id", "key"),
    "assessment": ("assessments", "rationale IS NOT NULL", "rationale", "rationale || '-x'", "assessments", "assessment_id", "rationale"),
    "logged_model": ("logged_models", "1", "name", "name || '-x'", "logged_models", "model_id", "name"),
    "logged_model_param": ("logged_model_params", "1", "param_value", "param_value || '-x'", "logged_models", "model_id", "param_key"),
    "logged_model_metric": ("logged_model_metrics", "1", "metric_value", "metric_value + 1", "logged_models", "model_id", "metrics"),
    "registered_model": ("registered_models", "name NOT LIKE 'fx-prompt%'", "description", "'changed'", "registered_models", "name", "description"),
    "registered_model_tag": ("registered_model_tags", "key LIKE 'fx.%'", "value", "value || '-x'", "registered_models", "name", "key"),
    "alias": ("registered_model_aliases", "1", "version", "version + 100", "registered_models", "name", "alias"),
    "model_version": ("model_versions", "1", "source", "source || '-x'", "model_versions", "name||'/'||version", "source"),
    "model_version_tag": ("model_version_tags", "key LIKE 'fx.%'", "value", "value || '-x'", "model_versions", "name||'/'||version", "key"),
}


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    work = tmp_path_factory.mktemp("corrupt")
    root = generate_fixture_tree(work / "tree")
    db = work / "clean.db"
    result = run_cli("--source", str(root), "--target", f"sqlite:///{db}", "--no-verify", "-q")
    assert result.returncode == 0, result.stderr
    return root, db


def test_clean_database_verifies_clean(migrated, tmp_path):
    root, db = migrated
    report = tmp_path / "report.json"
    result = run_cli("verify", "--source", str(root), "--target", f"sqlite:///{db}", "--report", str(report))
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(report.read_text())["verification"]["mismatches"] == []


@pytest.mark.parametrize("case", CASES)
def test_single_corruption_is_caught_and_named(migrated, tmp_path, case):
    table, where, column, change, entity, id_expr, field = CASES[case]
    root, clean = migrated
    db = tmp_path / "corrupt.db"
    shutil.copyfile(clean, db)
    conn = sqlite3.connect(db)
    try:
        row = conn.execute(f"SELECT rowid, * FROM {table} WHERE {where} ORDER BY rowid LIMIT 1").fetchone()
        if row is None:
            pytest.skip(f"the installed MLflow made no {table} row matching {where}")
        columns = ["rowid"] + [d[1] for d in conn.execute(f"PRAGMA table_info({table})")]
        record = dict(zip(columns, row))
        expected_id = conn.execute(f"SELECT {id_expr} FROM {table} WHERE rowid = ?", (row[0],)).fetchone()[0] if id_expr else None
        key_field = record.get(field) if field in ("key", "param_key", "alias") else field
        conn.execute(f"UPDATE {table} SET {column} = {change} WHERE rowid = ?", (row[0],))
        conn.commit()
    finally:
        conn.close()

    report_path = tmp_path / "report.json"
    result = run_cli("verify", "--source", str(root), "--target", f"sqlite:///{db}", "--report", str(report_path))

    assert result.returncode == 1, result.stdout + result.stderr
    mismatches = json.loads(report_path.read_text())["verification"]["mismatches"]
    assert len(mismatches) == 1, mismatches
    (m,) = mismatches
    assert m["entity"] == entity
    if expected_id is not None:
        assert m["id"] == str(expected_id)
    if field is not None:
        assert m["field"] == key_field
    assert "FAILED: " in result.stderr
