"""The MySQL target on its worst day, on a real MariaDB server: kill -9 during the load and while
the promotion's RENAME TABLE waits, a promotion cut short between the rename and its trigger, and
a second run started while one is running. "As it was" is checked on the target's tables (their
definitions), triggers and rows.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli
from tests.integration.test_mysql_target import catalog, database_of, snapshot
from tests.mysql_server import PASSWORD


RUNS = 40


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A synthetic tree whose load commits several times (the tests run with --batch-size 2000)."""
    mlruns = tmp_path_factory.mktemp("mysqlcrash") / "mlruns"
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_large_tree.py"), "--output", str(mlruns),
         "--shape", "metric-heavy", "--runs", str(RUNS), "--registered-models", "1"],
        check=True, capture_output=True, timeout=300,
    )
    return mlruns


@pytest.fixture(scope="module")
def mlflow_initialized(mysql_server) -> dict:
    """What `mlflow server` leaves in a new database on first start (MLflow's schema, with the
    secrets table's trigger, and the Default experiment), made once by MLflow in a process of its
    own (its pooled connections end with it: the tests wait for etl-migrate's sessions to end)
    and recorded as etl.sink.mysql.schema records a schema, tables, triggers and rows."""
    from etl.sink.mysql.schema import record

    uri = mysql_server.create_database("etl_mlflow_initialized")
    code = ("import sys; from tests.conftest import mysql_client; "
            "print([e.name for e in mysql_client(sys.argv[1]).search_experiments()])")
    made = subprocess.run([sys.executable, "-c", code, uri], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert made.stdout.strip() == "['Default']", made.stderr[-2000:]
    conn = mysql_server.connect("etl_mlflow_initialized")
    try:
        return record(conn, "etl_mlflow_initialized")
    finally:
        conn.close()


@pytest.fixture
def initialized(mysql_server, mysql_uri, mlflow_initialized) -> str:
    """A new database holding what MLflow initialized (see mlflow_initialized)."""
    from etl.sink.mysql.schema import replay

    database = database_of(mysql_uri)
    conn = mysql_server.connect(database)
    try:
        replay(conn, database, mlflow_initialized)
    finally:
        conn.close()
    return mysql_uri


def start(tree: Path, uri: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "etl", "--source", str(tree), "--target", uri, "-q", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for(server, query: str, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = server.sql(query)
        if rows and rows[0][0]:
            return rows[0][0]
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {query}")


def staging_database(server) -> str:
    return wait_for(server, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA "
                            "WHERE SCHEMA_NAME LIKE 'etl\\_migrate\\_staging\\_%' AND SCHEMA_NAME NOT LIKE '%\\_old'")


def sessions(server) -> set[int]:
    """The ids of the tests' user's sessions (MLflow clients of this process keep some open)."""
    return {r[0] for r in server.sql("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'etl'")}


def wait_for_sessions_to_end(server, earlier: set[int], timeout: float = 60) -> None:
    """The server ends a killed client's sessions (rolling their transactions back) once it
    notices: every session of the user but ``earlier`` (those open before the client started)."""
    deadline = time.monotonic() + timeout
    while sessions(server) - earlier:
        if time.monotonic() > deadline:
            raise AssertionError(f"sessions of the killed run still open: {sessions(server) - earlier}")
        time.sleep(0.05)


def loading(server, proc) -> str:
    """The staging database, once rows are committed into it: the load is under way."""
    staging = staging_database(server)
    wait_for(server, f"SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{staging}' "
                     "AND TABLE_NAME = 'metrics'")
    wait_for(server, f"SELECT COUNT(*) FROM `{staging}`.metrics", timeout=300)
    return staging


def test_kill_9_during_the_load_leaves_the_target_as_it_was(tree, mysql_server, mysql_uri, tmp_path):
    database = database_of(mysql_uri)
    before = snapshot(mysql_server, database)
    earlier = sessions(mysql_server)
    # The runs' temporary folder, where LOAD DATA's file of rows is: the next run removes the one
    # the killed run could not (it holds param and tag values), and leaves no other.
    temp = tmp_path / "temp"
    temp.mkdir()
    (temp / "etl-migrate-load-1-live.csv").write_text("")  # a live process's (pid 1): not removed
    env = {**os.environ, "TMPDIR": str(temp)}
    proc = start(tree, mysql_uri, "--batch-size", "2000", env=env)
    staging = loading(mysql_server, proc)
    proc.kill()
    proc.wait()
    assert sorted(int(p.name.split("-")[3]) for p in temp.glob("etl-migrate-load-*.csv")) == [1, proc.pid]
    wait_for_sessions_to_end(mysql_server, earlier)
    after = snapshot(mysql_server, database)
    assert after.pop("etl_databases") == [staging]  # the killed run's staging database; nothing else
    before.pop("etl_databases")
    assert after == before

    again = run_cli("--source", str(tree), "--target", mysql_uri, "-q", env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert mysql_server.databases("etl_migrate_") == []
    assert mysql_server.sql(f"SELECT COUNT(*) FROM `{database}`.runs") == [(RUNS,)]
    assert [p.name for p in temp.iterdir()] == ["etl-migrate-load-1-live.csv"]


def test_kill_9_while_the_promotion_waits_leaves_the_target_as_it_was(tree, mysql_server, initialized):
    """The promotion's one RENAME TABLE is held up (this test holds a lock on a staged table) after
    the run prepared it: the target's empty tables' database made, the staged triggers taken off.
    kill -9 then: the server drops the statement with the session, and the target is as it was."""
    database = database_of(initialized)
    before = snapshot(mysql_server, database)
    schema = catalog(mysql_server, database)
    earlier = sessions(mysql_server)
    proc = start(tree, initialized, "--batch-size", "2000")
    # Once the load is under way the schema is complete: hold the staged workspaces table.
    staging = loading(mysql_server, proc)
    blocker = mysql_server.connect()
    blocker.autocommit(False)
    try:
        with blocker.cursor() as cur:
            cur.execute(f"SELECT * FROM `{staging}`.workspaces")  # a metadata lock until rollback
        wait_for(mysql_server, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'RENAME TABLE%' "
                               "AND STATE LIKE 'Waiting for table metadata lock%'", timeout=300)
        assert mysql_server.sql(f"SELECT COUNT(*) FROM `{staging}`.etl_migrate_run WHERE kind = 'promoting'") == [(1,)]
        proc.kill()
        proc.wait()
        wait_for_sessions_to_end(mysql_server, earlier)
    finally:
        blocker.rollback()
        blocker.close()
    after = snapshot(mysql_server, database)
    assert after.pop("etl_databases") == [staging, staging + "_old"]
    before.pop("etl_databases")
    assert after == before

    again = run_cli("--source", str(tree), "--target", initialized, "-q")
    assert again.returncode == 0, again.stderr[-2000:]
    assert mysql_server.databases("etl_migrate_") == []
    assert catalog(mysql_server, database) == schema


def test_kill_9_after_the_rename_is_finished_by_the_next_run(tree, mysql_server, initialized, tmp_path):
    """The rename is the promotion's commit; what follows (dropping the target's old empty tables,
    making the staged tables' trigger in the target) is finished by the next run should a kill
    land there: it reads what to make from the killed run's staging database, before it refuses
    the target, which now holds the killed run's data."""
    from etl.sink.mysql.staging import HOLD_AFTER_RENAME

    database = database_of(initialized)
    schema = catalog(mysql_server, database)
    earlier = sessions(mysql_server)
    proc = subprocess.Popen(
        [sys.executable, "-m", "etl", "--source", str(tree), "--target", initialized, "-q", "--batch-size", "2000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, HOLD_AFTER_RENAME: str(tmp_path / "never")})
    wait_for(mysql_server, f"SELECT COUNT(*) FROM `{database}`.runs", timeout=600)
    proc.kill()
    proc.wait()
    wait_for_sessions_to_end(mysql_server, earlier)
    # Promoted, not finished: the target's old secrets table (renamed, its trigger with it) is
    # still there, and the new one has no trigger yet.
    assert [t[:2] for t in catalog(mysql_server, database)["triggers"]] == [
        ("prevent_secrets_aad_mutation", "etl_migrate_old_secrets")]

    again = run_cli("--source", str(tree), "--target", initialized, "-q")
    assert again.returncode == 2 and "already holds MLflow data" in again.stderr, again.stderr[-2000:]
    assert catalog(mysql_server, database) == schema
    assert mysql_server.databases("etl_migrate_") == []
    assert mysql_server.sql(f"SELECT COUNT(*) FROM `{database}`.runs") == [(RUNS,)]


def test_a_second_run_at_once_stops_and_the_first_completes(tree, mysql_server, mysql_uri, tmp_path):
    """The first run holds just before its promotion (the target's lock held) until the second
    one has been refused."""
    from etl.pipeline import HOLD_BEFORE_PROMOTION

    release = tmp_path / "release"
    first = subprocess.Popen([sys.executable, "-m", "etl", "--source", str(tree), "--target", mysql_uri, "-q"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, HOLD_BEFORE_PROMOTION: str(release)})
    staging_database(mysql_server)
    second = run_cli("--source", str(tree), "--target", mysql_uri, "-q")
    release.touch()
    assert second.returncode == 2
    assert f"another etl-migrate is migrating into {mysql_uri.replace(PASSWORD, '***')}" in second.stderr
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-2000:]
    assert mysql_server.databases("etl_migrate_") == []
    assert mysql_server.sql(f"SELECT COUNT(*) FROM `{database_of(mysql_uri)}`.runs") == [(RUNS,)]
