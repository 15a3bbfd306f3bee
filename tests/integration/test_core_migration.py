"""The foundation, end to end: a tree made by MLflow's API, migrated by the real CLI, read back
through MlflowClient on both sides."""

from __future__ import annotations

import math
import sqlite3

import pytest
import sqlalchemy

from tests.client_compare import compare_experiments, compare_registry, compare_runs
from tests.conftest import run_cli, tree_fingerprint
from tests.trees import LONG_PARAM, LONG_TAG, build_core_tree, file_client, sql_client


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    root = tmp_path_factory.mktemp("core")
    ids = build_core_tree(root / "mlruns")
    before = tree_fingerprint(root / "mlruns")
    db = root / "mlflow.db"
    # The folder that contains mlruns/ is accepted as --source, as MLflow's own tool accepts it.
    result = run_cli("--source", str(root), "--target", f"sqlite:///{db}", "--workers", "4", cwd=root)
    assert result.returncode == 0, result.stderr
    return {"root": root, "db": db, "ids": ids, "before": before, "result": result}


@pytest.fixture(scope="module")
def clients(core):
    return file_client(core["root"] / "mlruns"), sql_client(core["db"])


def test_run_reports_success_and_server_command(core):
    out = core["result"].stdout
    assert "Status: SUCCESS" in out
    assert f"mlflow server --backend-store-uri sqlite:///{core['db']}" in out


def test_experiments_equal(clients):
    assert compare_experiments(*clients) == 4  # Default, two created, one deleted


def test_runs_params_tags_metrics_equal(clients):
    assert compare_runs(*clients) == 7


def test_registry_equal(clients):
    assert compare_registry(*clients) == 2


def test_edge_values_survive(core, clients):
    _, dst = clients
    ids = core["ids"]
    full = dst.get_run(ids["full_run"])
    assert full.data.params["long"] == LONG_PARAM
    assert full.data.params["nested/param"] == "n"
    assert full.data.params["empty"] == ""
    assert full.data.tags["long"] == LONG_TAG
    assert full.data.tags["owner"] == "ゆき 🌸"
    assert math.isnan(full.data.metrics["nan_metric"])
    assert full.data.metrics["pos_inf"] == 1.7976931348623157e308
    assert full.data.metrics["neg_inf"] == -1.7976931348623157e308
    assert [m.value for m in dst.get_metric_history(ids["full_run"], "dup")] == [7.0, 8.0]
    assert dst.get_run(ids["running_run"]).info.status == "RUNNING"
    assert dst.get_run(ids["killed_run"]).info.status == "KILLED"
    assert dst.get_run(ids["deleted_run"]).info.lifecycle_stage == "deleted"
    assert dst.get_experiment(ids["deleted_experiment"]).lifecycle_stage == "deleted"
    assert dst.get_experiment(ids["s3_experiment"]).artifact_location == "s3://bucket/some/path"
    assert len(ids["experiment"]) == 18
    assert dst.get_model_version("model-α", "2").run_id is None


def test_deleted_time_and_exact_duplicate_collapse(core):
    conn = sqlite3.connect(core["db"])
    try:
        (deleted_time,) = conn.execute(
            "SELECT deleted_time FROM runs WHERE run_uuid = ?", (core["ids"]["deleted_run"],)
        ).fetchone()
        dup_rows = conn.execute(
            "SELECT COUNT(*) FROM metrics WHERE run_uuid = ? AND key = 'dup'", (core["ids"]["full_run"],)
        ).fetchone()[0]
    finally:
        conn.close()
    assert deleted_time is not None
    assert dup_rows == 2  # three lines in the file, two distinct points


def test_schema_is_mlflow_head_no_upgrade_needed(core):
    from mlflow.store.db.utils import _verify_schema

    engine = sqlalchemy.create_engine(f"sqlite:///{core['db']}")
    try:
        _verify_schema(engine)  # raises when the database would need `mlflow db upgrade`
    finally:
        engine.dispose()


def test_source_untouched_and_no_leftovers(core):
    root = core["root"]
    assert tree_fingerprint(root / "mlruns") == core["before"]
    assert sorted(p.name for p in root.iterdir()) == ["mlflow.db", "mlruns"]
