"""What happens to every metric point: the points a metric file holds that the database holds
once are counted, named per series, and said in the summary and the report, by a migration and
by `etl-migrate verify` alike. The tree is MLflow's own work: a run that logged a metric and then
a model (MLflow writes that metric's point twice), and a logged model's metric logged again at
the same timestamp and step with another value (the SQL schema keys the point without its value).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from tests.conftest import run_cli
from tests.trees import build_training_tree, default_uris


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    import mlflow

    root = tmp_path_factory.mktemp("duplicates")
    mlruns = root / "mlruns"
    ids = build_training_tree(mlruns)
    run_id, key = ids["duplicated"]
    ts = int((mlruns / ids["experiment"] / run_id / "metrics" / key).read_text().split()[0])
    with default_uris(mlruns):
        # A corrected evaluation of the model, at the same time and step as the first.
        mlflow.log_metric(key, 0.95, step=0, timestamp=ts, run_id=run_id, model_id=ids["model"])
    return root, ids


def test_every_point_is_accounted_for(tree, tmp_path):
    root, ids = tree
    run_id, key = ids["duplicated"]
    report_path = tmp_path / "report.json"
    db = tmp_path / "mlflow.db"
    result = run_cli("--source", str(root / "mlruns"), "--target", f"sqlite:///{db}", "--report", str(report_path))
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    assert report["duplicate_points"] == [
        {"table": "metrics", "entity": "run", "id": run_id, "key": key, "points": 1, "exact": True},
        {"table": "logged_model_metrics", "entity": "logged model", "id": ids["model"], "key": key,
         "points": 1, "exact": False},
    ]
    source, target = report["counts"]["source"], report["counts"]["target"]
    for table in ("metrics", "logged_model_metrics"):
        held_once = sum(d["points"] for d in report["duplicate_points"] if d["table"] == table)
        assert source[table] - target[table] == held_once, table
    with sqlite3.connect(db) as conn:  # the first of the model's two values is the one kept
        assert conn.execute("SELECT metric_value FROM logged_model_metrics WHERE model_id = ?",
                            (ids["model"],)).fetchall() == [(0.9,)]

    out = result.stdout
    assert ("Duplicate points: 1 metric point(s) in 1 series repeat an earlier point of their series "
            "exactly and are stored once") in out
    assert f"  - run {run_id}, metric {key!r}: 1 duplicate point(s)" in out
    assert "NOT STORED: 1 logged-model metric point(s) in 1 series repeat the timestamp, step and run" in out
    assert f"  - logged model {ids['model']}, metric {key!r}: 1 point(s) not stored" in out
    # Points and series are named apart: the table counts points, the verification series.
    assert f"{'metrics (points)':<32}{source['metrics']:>14,}{target['metrics']:>14,}" in out
    assert "Metric histories: 3/3 series passed" in out  # loss in two runs, accuracy in one

    checked = run_cli("verify", "--source", str(root / "mlruns"), "--target", f"sqlite:///{db}",
                      "--report", str(tmp_path / "verify.json"))
    assert checked.returncode == 0, checked.stderr
    assert json.loads((tmp_path / "verify.json").read_text())["duplicate_points"] == report["duplicate_points"]
    assert f"  - run {run_id}, metric {key!r}: 1 duplicate point(s)" in checked.stdout


def test_mlflows_own_migration_fails_on_the_points_mlflow_wrote_twice(tree, tmp_path):
    """What the README's comparison says of `mlflow migrate-filestore` on such a tree: it stops
    at the first repeated point and leaves a database with MLflow's schema and no data."""
    root, _ = tree
    db = tmp_path / "builtin.db"
    result = subprocess.run([sys.executable, "-m", "mlflow", "migrate-filestore", "--source", str(root),
                             "--target", f"sqlite:///{db}"], capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "UNIQUE constraint failed: metrics.key" in result.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM alembic_version").fetchone()[0] == 1
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0
