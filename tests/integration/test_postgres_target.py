"""The PostgreSQL target on a real server: a whole tree migrated and read back through MLflow's
client, and every way the target can be refused (holding data, unreachable, wrong password,
missing privileges, locked by another run, a value too long for its column), each leaving the
database exactly as it was, with no staging schema behind and no password printed.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from pathlib import Path

import psycopg
import pytest

from tests.client_compare import compare_experiments, compare_registry, compare_runs
from tests.conftest import pg_client, posix_only, run_cli, tree_fingerprint
from tests.pg_server import PASSWORD
from tests.trees import build_core_tree, file_client

INT32_MAX = 2**31 - 1


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    mlruns = tmp_path_factory.mktemp("pg") / "mlruns"
    return mlruns, build_core_tree(mlruns)


@pytest.fixture
def tree(built) -> Path:
    return built[0]


def snapshot(uri: str) -> dict:
    """Every relation of the database (outside the system schemas) with its oid, and the rows
    of every table: equal snapshots mean nothing was created, dropped or written."""
    with psycopg.connect(uri, autocommit=True) as conn:
        relations = conn.execute(
            "SELECT n.nspname, c.relname, c.relkind, c.oid::int FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' "
            "ORDER BY 1, 2"
        ).fetchall()
        rows = {
            f"{schema}.{name}": conn.execute(f'SELECT * FROM "{schema}"."{name}" ORDER BY 1').fetchall()
            for schema, name, kind, _ in relations if kind == "r"
        }
        schemas = [r[0] for r in conn.execute("SELECT nspname FROM pg_namespace ORDER BY 1")]
    return {"relations": relations, "rows": rows, "schemas": schemas}


def staging_schemas(uri: str) -> list[str]:
    with psycopg.connect(uri, autocommit=True) as conn:
        return [r[0] for r in conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'etl_migrate_staging_%'")]


def without_password(uri: str) -> str:
    return uri.replace(f":{PASSWORD}@", "@")


def assert_no_password(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text


def test_core_tree_into_postgres(tree, built, pg_uri, tmp_path):
    """The default command, password from PGPASSWORD: everything lands, MLflow's client reads
    it back through the id map, the schema is at MLflow's head, and new experiments work."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    before = tree_fingerprint(tree)
    report = tmp_path / "report.json"
    uri = without_password(pg_uri)
    result = run_cli("--source", str(tree), "--target", uri, "--report", str(report),
                     env={**os.environ, "PGPASSWORD": PASSWORD})
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(report.read_text())
    assert_no_password(result.stdout, result.stderr, report.read_text())
    assert tree_fingerprint(tree) == before
    assert staging_schemas(pg_uri) == []

    # Ids over 32 bits are renumbered above the largest kept id, by creation time then old id.
    id_map = data["experiment_id_map"]
    exps = {e.experiment_id: e for e in file_client(tree).search_experiments(view_type=3)}
    moved = sorted((e.creation_time, int(i)) for i, e in exps.items() if int(i) > INT32_MAX)
    kept = max(int(i) for i in exps if int(i) <= INT32_MAX)
    assert id_map == {str(old): str(kept + 1 + n) for n, (_, old) in enumerate(moved)}
    assert "Experiment ids renumbered" in result.stdout
    for old, new in id_map.items():
        assert f"{old} -> {new}" in result.stdout

    src, dst = file_client(tree), pg_client(pg_uri)
    assert compare_experiments(src, dst, id_map) == len(exps)
    assert compare_runs(src, dst, id_map) >= 6
    assert compare_registry(src, dst) == 2
    # Artifact locations keep the old ids, so they still find the artifacts on disk.
    for old, new in id_map.items():
        location = dst.get_experiment(new).artifact_location
        assert location == exps[old].artifact_location
        assert old in location or not location.startswith("file:")

    with psycopg.connect(pg_uri) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (_get_latest_schema_revision(),)]
    assert data["counts"]["target"]["runs"] == data["counts"]["source"]["runs"] > 0

    # `etl-migrate verify` finds the same map on its own and proves the database again.
    check = run_cli("verify", "--source", str(tree), "--target", pg_uri, "--report", str(tmp_path / "v.json"))
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-2000:]
    verified = json.loads((tmp_path / "v.json").read_text())
    assert verified["experiment_id_map"] == id_map
    assert verified["counts"]["target"] == data["counts"]["target"]
    assert_no_password(check.stdout, check.stderr, (tmp_path / "v.json").read_text())

    # Run again: refused, and told how to check what is there, in a command that runs as printed.
    again = run_cli("--source", str(tree), "--target", uri, env={**os.environ, "PGPASSWORD": PASSWORD})
    assert again.returncode == 2 and "already holds MLflow data (" in again.stderr
    hint = again.stderr.split("`")[1]
    assert hint == f"etl-migrate verify --source {tree} --target {uri.replace('postgresql://', 'postgresql+psycopg://', 1)}"
    rerun = run_cli(*shlex.split(hint)[1:], env={**os.environ, "PGPASSWORD": PASSWORD})
    assert rerun.returncode == 0 and "Status: SUCCESS" in rerun.stdout, rerun.stderr[-2000:]

    # The id sequence is past every migrated id: MLflow's next experiment does not collide.
    created = dst.create_experiment("made after the migration")
    assert int(created) == max(int(v) for v in id_map.values()) + 1


def test_schema_named_by_search_path(tree, pg_uri):
    """A URI whose options name a schema: MLflow's tables go there, public stays empty."""
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA mlflow_tracking")
    uri = f"{pg_uri}?options=-csearch_path%3Dmlflow_tracking"
    before = snapshot(pg_uri)
    result = run_cli("--source", str(tree), "--target", uri, "--no-verify", "-q")
    assert result.returncode == 0, result.stderr[-3000:]
    after = snapshot(pg_uri)
    assert [r for r in after["relations"] if r[0] == "public"] == [r for r in before["relations"] if r[0] == "public"]
    assert "mlflow_tracking.runs" in after["rows"] and after["rows"]["mlflow_tracking.runs"]


def test_database_mlflow_initialized_counts_as_empty(tree, pg_uri):
    """What `mlflow server` leaves in a new database (its schema, the Default experiment) is
    replaced; the tree's experiments are there afterwards."""
    client = pg_client(pg_uri)
    assert [e.name for e in client.search_experiments()] == ["Default"]
    result = run_cli("--source", str(tree), "--target", pg_uri, "-q")
    assert result.returncode == 0, result.stderr[-3000:]
    names = {e.name for e in pg_client(pg_uri).search_experiments(view_type=3)}
    assert names == {e.name for e in file_client(tree).search_experiments(view_type=3)}


def test_target_holding_data_is_refused_and_untouched(tree, pg_uri):
    client = pg_client(pg_uri)
    client.create_experiment("someone else's experiment")
    before = snapshot(pg_uri)
    result = run_cli("--source", str(tree), "--target", pg_uri, "-q")
    assert result.returncode == 2
    # As MLflow shows it: the Default experiment and the other one; nothing like this tree.
    assert "already holds MLflow data (2 experiments); " in result.stderr
    assert "etl-migrate verify" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert_no_password(result.stdout, result.stderr)
    assert snapshot(pg_uri) == before


def test_unreachable_server_is_one_clear_line(tree, pg_server):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    result = run_cli("--source", str(tree), "--target", f"postgresql://u:{PASSWORD}@127.0.0.1:{port}/db", "-q")
    assert result.returncode == 2
    assert "cannot connect to PostgreSQL target postgresql://u:***@127.0.0.1" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert_no_password(result.stdout, result.stderr)


def test_wrong_password_is_refused(tree, pg_uri):
    before = snapshot(pg_uri)
    wrong = pg_uri.replace(PASSWORD, "not-the-password")
    result = run_cli("--source", str(tree), "--target", wrong)
    assert result.returncode == 2
    assert "password authentication failed" in result.stderr
    assert "not-the-password" not in result.stderr + result.stdout
    assert snapshot(pg_uri) == before


def test_role_without_create_privilege_is_refused(tree, pg_server, pg_uri):
    database = pg_uri.rsplit("/", 1)[1]
    with pg_server.connect() as conn:
        conn.execute("DROP ROLE IF EXISTS reader")
        conn.execute(f"CREATE ROLE reader LOGIN PASSWORD '{PASSWORD}'")
        conn.execute(f'REVOKE CREATE ON DATABASE "{database}" FROM PUBLIC')
    before = snapshot(pg_uri)
    result = run_cli("--source", str(tree), "--target", pg_server.uri(database, user="reader"))
    assert result.returncode == 2
    assert "role 'reader' may not create schemas in database" in result.stderr
    assert "GRANT CREATE ON DATABASE" in result.stderr
    assert snapshot(pg_uri) == before


def test_second_run_at_once_is_refused(tree, pg_uri):
    """Another run holds the target's advisory lock: this one stops at once, creates nothing."""
    from etl.sink.postgres.staging import LOCK_CLASS

    with psycopg.connect(pg_uri, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s, hashtext('target:public'))", (LOCK_CLASS,))
        before = snapshot(pg_uri)
        result = run_cli("--source", str(tree), "--target", pg_uri)
        assert result.returncode == 2
        assert "another etl-migrate is migrating into schema 'public'" in result.stderr
        assert snapshot(pg_uri) == before


@pytest.fixture
def long_value_tree(tree, tmp_path) -> tuple[Path, Path]:
    """A copy of the tree where one run's tag file holds more than tags.value's 8000 characters
    (written by hand: MLflow's client refuses it, SQLite would store it)."""
    copy = tmp_path / "mlruns"
    shutil.copytree(tree, copy)
    tag = next(p for p in sorted(copy.glob("*/*/tags/mlflow.runName")))
    tag.write_text("x" * 8001)
    return copy, tag


def test_value_over_column_limit_is_invalid_input(long_value_tree, pg_uri):
    copy, tag = long_value_tree
    before = snapshot(pg_uri)
    result = run_cli("--source", str(copy), "--target", pg_uri)
    assert result.returncode == 3, result.stderr[-2000:]
    assert f"{tag}: tags.value is 8001 characters long; the target holds at most 8000" in result.stderr
    assert snapshot(pg_uri) == before
    # The same tree suits SQLite, which has no such limit.
    sqlite = run_cli("--source", str(copy), "--target", f"sqlite:///{copy.parent}/ok.db", "-q")
    assert sqlite.returncode == 0, sqlite.stderr[-2000:]


def test_dry_run_reports_a_value_over_column_limit(long_value_tree, pg_uri):
    """A dry run stages nothing, yet lists the value the real run would refuse, as it would."""
    copy, tag = long_value_tree
    before = snapshot(pg_uri)
    result = run_cli("--source", str(copy), "--target", pg_uri, "--dry-run")
    assert result.returncode == 3, result.stderr[-2000:]
    assert f"{tag}: tags.value is 8001 characters long; the target holds at most 8000" in result.stderr
    assert snapshot(pg_uri) == before


def test_dry_run_limits_are_those_of_a_staged_schema(pg_uri):
    """The dry run reads PostgreSQL's limits from the types MLflow's migrations declare; a
    staged schema says the same, column by column."""
    from etl.sink.postgres.staging import PostgresTarget

    target = PostgresTarget(pg_uri)
    with target.staging() as area:
        area.create_schema()
        staged = area.column_limits()
    expected = target.expected_limits()
    assert {k: v for k, v in staged.items() if v.max_length} and staged.keys() == expected.keys()
    for key, limit in staged.items():
        assert expected[key] == limit, key


def test_value_over_column_limit_skipped_with_skip_invalid(long_value_tree, pg_uri, tmp_path):
    copy, tag = long_value_tree
    run_id = tag.parent.parent.name
    report = tmp_path / "r.json"
    result = run_cli("--source", str(copy), "--target", pg_uri, "--skip-invalid", "--report", str(report))
    assert result.returncode == 0, result.stderr[-3000:]
    assert str(tag) in result.stdout
    skipped = json.loads(report.read_text())["skipped"]
    assert any(s["path"] == str(tag) for s in skipped)
    with psycopg.connect(pg_uri) as conn:
        assert conn.execute("SELECT COUNT(*) FROM runs WHERE run_uuid = %s", (run_id,)).fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM tags WHERE run_uuid = %s", (run_id,)).fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] > 0


@posix_only("the test server is stopped through its process group")
def test_mlflow_server_on_the_migrated_postgres_database(tree, pg_server, pg_uri, tmp_path, monkeypatch):
    """`mlflow server` of the installed MLflow opens the result without `mlflow db upgrade`,
    serves every experiment over REST (through the id map), and a run it logs lands in the
    database. The run replays the recorded schema, as every run after a machine's first does
    (that the replay equals MLflow's migrations: test_postgres_schema.py)."""
    from mlflow import MlflowClient

    from tests import mlflow_server
    from tests.integration.test_postgres_schema import warm_recording

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    warm_recording(pg_server)
    report = tmp_path / "report.json"
    result = run_cli("--source", str(tree), "--target", pg_uri, "--report", str(report), "--log-format", "json")
    assert result.returncode == 0, result.stderr[-3000:]
    assert '"how": "replayed"' in result.stderr
    id_map = json.loads(report.read_text())["experiment_id_map"]

    backend = pg_uri.replace("postgresql://", "postgresql+psycopg://", 1)
    server, url, _log = mlflow_server.start(backend, tmp_path)
    try:
        rest = MlflowClient(tracking_uri=url)
        assert compare_experiments(file_client(tree), rest, id_map) > 1
        exp_id = rest.get_experiment_by_name("Default").experiment_id
        run = rest.create_run(exp_id)
        rest.log_param(run.info.run_id, "after", "migration")
    finally:
        mlflow_server.stop(server)
    assert pg_client(pg_uri).get_run(run.info.run_id).data.params == {"after": "migration"}
