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


TABLES = ("experiments", "runs", "metrics", "params", "tags", "latest_metrics")


def migrate(tree: Path, db: Path, *options: str) -> None:
    result = run_cli("--source", str(tree), "--target", f"sqlite:///{db}", "-q", *options)
    assert result.returncode == 0, result.stderr[-3000:]


def written(db: Path) -> dict[str, list[tuple]]:
    """Every row of the run-keyed tables and their parents, in the order it was written."""
    conn = sqlite3.connect(db)
    try:
        return {t: conn.execute(f'SELECT * FROM "{t}" ORDER BY rowid').fetchall() for t in TABLES}
    finally:
        conn.close()


def test_runs_are_written_in_the_order_of_their_ids(tree, tmp_path):
    db = tmp_path / "mlflow.db"
    migrate(tree, db, "--workers", "2")
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


def test_the_same_tree_gives_the_same_rows_in_the_same_order(tree, tmp_path):
    """However many worker processes parse it, and however small the queue between them and the
    writer (so units finish far out of the order they are written in)."""
    many, one = tmp_path / "many.db", tmp_path / "one.db"
    migrate(tree, many, "--workers", "3", "--queue-size", "1", "--no-verify")
    migrate(tree, one, "--workers", "1", "--no-verify")
    first, second = written(many), written(one)
    assert len(first["metrics"]) > 1000
    for table in TABLES:
        assert first[table] == second[table], f"{table}: other rows or another order"
