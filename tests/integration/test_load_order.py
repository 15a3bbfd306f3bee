"""The load writes a tree's runs in the order of their ids across all its experiments, however the
worker processes finish them: MLflow's run-keyed indexes then grow at their end only (the cheap
way for SQLite), and the same tree gives the same database file by file, row by row."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from etl.pipeline import SMALL_TREE_FOLDERS
from tests.conftest import REPO, run_cli


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """More runs than a small tree (so worker processes parse them, finishing in any order), in
    several experiments (so the order of run ids crosses experiments), short metric files."""
    assert 160 > SMALL_TREE_FOLDERS
    mlruns = tmp_path_factory.mktemp("order") / "mlruns"
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_large_tree.py"), "--output", str(mlruns),
         "--shape", "metric-heavy", "--experiments", "5", "--runs", "160", "--min-steps", "2",
         "--max-steps", "3", "--params", "2", "--tags", "4"],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return mlruns


def test_runs_are_written_in_the_order_of_their_ids(tree, tmp_path):
    db = tmp_path / "mlflow.db"
    result = run_cli("--source", str(tree), "--target", f"sqlite:///{db}", "--workers", "2", "-q")
    assert result.returncode == 0, result.stderr[-3000:]
    conn = sqlite3.connect(db)
    try:
        experiments = conn.execute("SELECT COUNT(DISTINCT experiment_id) FROM runs").fetchone()[0]
        runs = [r[0] for r in conn.execute("SELECT run_uuid FROM runs ORDER BY rowid")]
        for table in ("metrics", "params", "tags", "latest_metrics"):
            order = [r[0] for r in conn.execute(f'SELECT run_uuid FROM "{table}" ORDER BY rowid')]
            assert order == sorted(order), f"{table}: rows not written in the order of run ids"
    finally:
        conn.close()
    assert experiments == 5 and len(runs) == 160
    assert runs == sorted(runs)
