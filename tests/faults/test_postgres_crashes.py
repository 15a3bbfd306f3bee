"""The PostgreSQL target on its worst day: kill -9 during the load and in the middle of the
promotion transaction, and a second run started while one is running.

The target in each test is a database MLflow itself initialized (its schema and the Default
experiment), so "untouched" is checked on real tables: same relations, same oids, same rows.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import REPO, pg_client, run_cli
from tests.integration.test_postgres_target import snapshot, staging_schemas


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A synthetic tree big enough that the load lasts a few seconds."""
    mlruns = tmp_path_factory.mktemp("pgcrash") / "mlruns"
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_large_tree.py"), "--output", str(mlruns),
         "--shape", "metric-heavy", "--runs", "120", "--registered-models", "1"],
        check=True, capture_output=True, timeout=300,
    )
    return mlruns


@pytest.fixture
def initialized(pg_uri) -> str:
    """A database as `mlflow server` leaves it on first start: MLflow's schema, Default experiment."""
    assert [e.name for e in pg_client(pg_uri).search_experiments()] == ["Default"]
    return pg_uri


def start(tree: Path, uri: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "etl", "--source", str(tree), "--target", uri, "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(conn, query: str, params=None, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute(query, params).fetchone()
        if row is not None and row[0]:
            return row[0]
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {query}")


def wait_for_sessions_to_end(conn, timeout: float = 60) -> None:
    """The server ends a killed client's session (rolling its transaction back) once it notices."""
    wait_for(conn, "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'etl-migrate%')",
             timeout=timeout)


def test_kill_9_during_the_load_leaves_the_target_as_it_was(tree, initialized):
    before = snapshot(initialized)
    with psycopg.connect(initialized, autocommit=True) as watch:
        proc = start(tree, initialized)
        # The writer is connected and COPY is under way.
        wait_for(watch, "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = 'etl-migrate writer' "
                        "AND query LIKE 'COPY%'")
        proc.kill()
        proc.wait()
        wait_for_sessions_to_end(watch)
    stale = staging_schemas(initialized)
    assert len(stale) == 1  # the killed run's staging schema; nothing else changed
    assert _same_outside(before, snapshot(initialized), stale[0])

    again = run_cli("--source", str(tree), "--target", initialized, "-q")
    assert again.returncode == 0, again.stderr[-2000:]
    assert staging_schemas(initialized) == []
    assert len(pg_client(initialized).search_experiments()) >= 2


def _same_outside(before: dict, after: dict, schema: str) -> bool:
    """Every relation and row outside the (stale) staging schema is as it was."""
    relations = [r for r in after["relations"] if r[0] != schema]
    rows = {k: v for k, v in after["rows"].items() if not k.startswith(f"{schema}.")}
    return relations == before["relations"] and rows == before["rows"]


def test_kill_9_in_the_middle_of_the_promotion_rolls_it_back(tree, initialized):
    """The promotion transaction is held up at its last move (a lock this test holds on the last
    staged table), after it has dropped the target's tables and moved the others in; kill -9
    then, and the server rolls the whole transaction back."""
    before = snapshot(initialized)
    with psycopg.connect(initialized, autocommit=True) as watch, psycopg.connect(initialized) as blocker:
        proc = start(tree, initialized)
        staging = wait_for(watch, "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'etl_migrate_staging_%'")
        wait_for(watch, "SELECT to_regclass(%s) IS NOT NULL", (f"{staging}.workspaces",))
        blocker.execute(f'LOCK TABLE "{staging}".workspaces IN ACCESS SHARE MODE')
        # The run's own session waits for that lock: it is inside the promotion transaction.
        wait_for(watch, "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = 'etl-migrate' "
                        "AND wait_event_type = 'Lock' AND query LIKE 'ALTER TABLE%SET SCHEMA%'", timeout=300)
        moved = watch.execute("SELECT COUNT(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                              "WHERE a.application_name = 'etl-migrate' AND l.mode = 'AccessExclusiveLock' "
                              "AND l.granted").fetchone()[0]
        assert moved > 10  # it did drop and move tables before it waited
        proc.kill()
        proc.wait()
        blocker.rollback()
        wait_for_sessions_to_end(watch)
    after = snapshot(initialized)
    stale = staging_schemas(initialized)
    assert stale == [staging]
    assert _same_outside(before, after, staging)

    again = run_cli("--source", str(tree), "--target", initialized, "-q")
    assert again.returncode == 0, again.stderr[-2000:]
    assert staging_schemas(initialized) == []


def test_a_second_run_at_once_stops_and_the_first_completes(tree, pg_uri):
    with psycopg.connect(pg_uri, autocommit=True) as watch:
        first = start(tree, pg_uri)
        wait_for(watch, "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = 'etl-migrate writer'")
        second = run_cli("--source", str(tree), "--target", pg_uri, "-q")
        assert second.returncode == 2
        assert "another etl-migrate is migrating into schema 'public'" in second.stderr
        _, err = first.communicate(timeout=600)
        assert first.returncode == 0, err[-2000:]
    assert staging_schemas(pg_uri) == []
    with psycopg.connect(pg_uri) as conn:
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 120
