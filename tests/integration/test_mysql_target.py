"""The MySQL / MariaDB target on a real MariaDB server: a whole tree migrated and read back through
MLflow's client, MLflow's own initialized schema replaced (its trigger made again), and every way
the target can be refused (holding data, unreachable, wrong password, no database, a character set
that cannot hold emoji, missing privileges, locked by another run), each leaving the database as
it was, with no staging database behind and no password printed.

Keys the collation holds as one, and values over MySQL's limits: tests/integration/test_mysql_keys.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.client_compare import compare_experiments, compare_registry, compare_runs
from tests.conftest import mysql_client, posix_only, run_cli, tree_fingerprint
from tests.mysql_server import CHARSET, COLLATION, PASSWORD
from tests.trees import build_core_tree, file_client

INT32_MAX = 2**31 - 1


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    mlruns = tmp_path_factory.mktemp("mysql") / "mlruns"
    return mlruns, build_core_tree(mlruns)


@pytest.fixture
def tree(built) -> Path:
    return built[0]


def database_of(uri: str) -> str:
    return uri.rsplit("/", 1)[1].split("?")[0]


def snapshot(server, database: str) -> dict:
    """The database's tables (as SHOW CREATE TABLE gives them), triggers and rows, and the
    server's etl-migrate databases: equal snapshots mean nothing was created, dropped or written."""
    tables = [r[0] for r in server.sql(f"SHOW FULL TABLES FROM `{database}` WHERE Table_type = 'BASE TABLE'")]
    return {
        "tables": {t: server.sql(f"SHOW CREATE TABLE `{database}`.`{t}`")[0][1] for t in tables},
        "rows": {t: sorted(map(repr, server.sql(f"SELECT * FROM `{database}`.`{t}`"))) for t in tables},
        "triggers": server.sql("SELECT TRIGGER_NAME, ACTION_STATEMENT FROM information_schema.TRIGGERS "
                               f"WHERE TRIGGER_SCHEMA = '{database}' ORDER BY 1"),
        "etl_databases": server.databases("etl_migrate_"),
    }


def without_password(uri: str) -> str:
    return uri.replace(f":{PASSWORD}@", "@")


def assert_no_password(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text


def test_core_tree_into_mariadb(tree, built, mysql_server, mysql_uri, tmp_path):
    """The default command, password from MYSQL_PWD: everything lands, MLflow's client reads it
    back through the id map (emoji intact), the schema is at MLflow's head, new experiments get
    ids past the migrated ones, and `etl-migrate verify` proves the database again."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    before = tree_fingerprint(tree)
    report = tmp_path / "report.json"
    result = run_cli("--source", str(tree), "--target", without_password(mysql_uri), "--report", str(report),
                     env={**os.environ, "MYSQL_PWD": PASSWORD})
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(report.read_text())
    assert_no_password(result.stdout, result.stderr, report.read_text())
    assert tree_fingerprint(tree) == before
    assert mysql_server.databases("etl_migrate_") == []
    assert "server --backend-store-uri mysql+pymysql://etl@127.0.0.1" in result.stdout

    # Ids over 32 bits are renumbered above the largest kept id, by creation time then old id.
    id_map = data["experiment_id_map"]
    exps = {e.experiment_id: e for e in file_client(tree).search_experiments(view_type=3)}
    moved = sorted((e.creation_time, int(i)) for i, e in exps.items() if int(i) > INT32_MAX)
    kept = max(int(i) for i in exps if int(i) <= INT32_MAX)
    assert id_map == {str(old): str(kept + 1 + n) for n, (_, old) in enumerate(moved)}

    src, dst = file_client(tree), mysql_client(mysql_uri)
    assert compare_experiments(src, dst, id_map) == len(exps)
    assert compare_runs(src, dst, id_map) >= 6
    assert compare_registry(src, dst) == 2
    assert dst.get_experiment(id_map[built[1]["experiment"]]).name == "核心 experiment 🚀"
    database = database_of(mysql_uri)
    assert mysql_server.sql(f"SELECT version_num FROM `{database}`.alembic_version") == [(_get_latest_schema_revision(),)]
    assert data["counts"]["target"]["runs"] == data["counts"]["source"]["runs"] > 0

    check = run_cli("verify", "--source", str(tree), "--target", mysql_uri, "--report", str(tmp_path / "v.json"))
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-2000:]
    verified = json.loads((tmp_path / "v.json").read_text())
    assert verified["experiment_id_map"] == id_map
    assert verified["counts"]["target"] == data["counts"]["target"]
    assert_no_password(check.stdout, check.stderr, (tmp_path / "v.json").read_text())

    # AUTO_INCREMENT is past every migrated id: MLflow's next experiment does not collide.
    created = dst.create_experiment("made after the migration")
    assert int(created) == max(int(v) for v in id_map.values()) + 1


def catalog(server, database: str) -> dict:
    """MLflow's schema in a database as the server describes it, order-free: columns (type,
    nullability, default, collation), indexes, foreign keys, checks, triggers, the alembic stamp."""
    def rows(sql: str) -> list:
        return sorted(map(tuple, server.sql(sql.replace("{db}", database))))

    return {
        "columns": rows("SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, EXTRA, "
                        "COLLATION_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = '{db}'"),
        "indexes": rows("SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX) "
                        "FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = '{db}' GROUP BY 1, 2, 3"),
        "foreign_keys": rows("SELECT r.TABLE_NAME, r.CONSTRAINT_NAME, r.REFERENCED_TABLE_NAME, r.UPDATE_RULE, "
                             "r.DELETE_RULE, GROUP_CONCAT(k.COLUMN_NAME ORDER BY k.ORDINAL_POSITION) "
                             "FROM information_schema.REFERENTIAL_CONSTRAINTS r JOIN information_schema.KEY_COLUMN_USAGE k "
                             "ON k.CONSTRAINT_SCHEMA = r.CONSTRAINT_SCHEMA AND k.CONSTRAINT_NAME = r.CONSTRAINT_NAME "
                             "AND k.TABLE_NAME = r.TABLE_NAME WHERE r.CONSTRAINT_SCHEMA = '{db}' GROUP BY 1, 2, 3, 4, 5"),
        "checks": rows("SELECT TABLE_NAME, CONSTRAINT_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
                       "WHERE CONSTRAINT_SCHEMA = '{db}'"),
        "triggers": rows("SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, "
                         "ACTION_STATEMENT, SQL_MODE FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '{db}'"),
        "stamp": rows("SELECT version_num FROM `{db}`.alembic_version"),
    }


@posix_only("the test server is stopped through its process group")
def test_mlflow_initialized_database_replaced_served_then_refused(tree, mysql_server, mysql_uri, tmp_path,
                                                                  monkeypatch):
    """What `mlflow server` leaves in a new database (its schema with the secrets table's trigger,
    the Default experiment) counts as empty and is replaced by the migrated schema, which is the
    same schema, trigger and all; `mlflow server` of the installed MLflow then opens it without
    `mlflow db upgrade`, serves every experiment over REST (through the id map), and logs a new
    run into it. A second migration into it is refused and changes nothing."""
    from mlflow import MlflowClient

    from tests import mlflow_server

    database = database_of(mysql_uri)
    assert [e.name for e in mysql_client(mysql_uri).search_experiments()] == ["Default"]
    initialized = catalog(mysql_server, database)
    assert initialized["triggers"], "MLflow's schema has a trigger on MySQL (secrets)"

    report = tmp_path / "report.json"
    result = run_cli("--source", str(tree), "--target", mysql_uri, "--report", str(report), "-q")
    assert result.returncode == 0, result.stderr[-3000:]
    assert catalog(mysql_server, database) == initialized
    assert mysql_server.databases("etl_migrate_") == []
    id_map = json.loads(report.read_text())["experiment_id_map"]

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    server, url, _log = mlflow_server.start(mysql_uri.replace("mysql://", "mysql+pymysql://", 1), tmp_path)
    try:
        rest = MlflowClient(tracking_uri=url)
        assert compare_experiments(file_client(tree), rest, id_map) > 1
        run = rest.create_run(rest.get_experiment_by_name("Default").experiment_id, run_name="after 🎉")
        rest.log_param(run.info.run_id, "after", "migration")
    finally:
        mlflow_server.stop(server)
    served = mysql_client(mysql_uri).get_run(run.info.run_id)
    assert served.data.params == {"after": "migration"} and served.info.run_name == "after 🎉"

    before = snapshot(mysql_server, database)
    again = run_cli("--source", str(tree), "--target", mysql_uri, "-q")
    assert again.returncode == 2
    assert "already holds MLflow data" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    assert_no_password(again.stdout, again.stderr)
    assert snapshot(mysql_server, database) == before


def test_recorded_schema_is_the_one_mlflow_migrations_build(mysql_server):
    """A build from the recording of MLflow's schema equals one by MLflow's migrations: the same
    columns, indexes, foreign keys, checks, triggers and rows (order-free: the migrations
    themselves create a table's indexes in no fixed order). A recording that does not replay is
    deleted, the migrations run instead on a clean database, and their result is recorded again.
    (The session's recording, if an earlier test made one, is the one damaged: one migration.)"""
    from etl.sink.mysql import schema
    from etl.sink.mysql.staging import MysqlTarget
    from etl.sink.target import cache_dir

    uri = mysql_server.create_database("etl_first_build")
    target = MysqlTarget(uri)
    for name in ("etl_after_damage", "etl_by_replay"):
        mysql_server.create_database(name)
    schema.create_schema(target, "etl_first_build")
    # This database's recording: the session's other tests record the schema under other
    # collations too.
    (path,) = cache_dir().glob(f"mysql-schema-*-{CHARSET}-{COLLATION}.json")
    data = json.loads(path.read_text())
    data["content"]["tables"].insert(1, "CREATE TABLE runs (broken int)")
    path.write_text(json.dumps(data))
    assert schema.create_schema(target, "etl_after_damage") == "migrated"
    assert "broken" not in path.read_text()
    # A recording stamped at another head than the one it holds is not replayed either.
    data = json.loads(path.read_text())
    head, data["content"]["head"] = data["content"]["head"], "0000"
    path.write_text(json.dumps(data))
    mysql_server.create_database("etl_after_head")
    assert schema.create_schema(target, "etl_after_head") == "migrated"
    assert json.loads(path.read_text())["content"]["head"] == head
    mysql_server.drop_database("etl_after_head")
    assert schema.create_schema(target, "etl_by_replay") == "replayed"
    # A replay leaves MLflow out of the process (~190 MB for the rest of a run).
    mysql_server.create_database("etl_replay_alone")
    code = ("import sys; from etl.sink.mysql import schema; from etl.sink.mysql.staging import MysqlTarget; "
            f"print(schema.create_schema(MysqlTarget({uri!r}), 'etl_replay_alone'), "
            "'mlflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["replayed", "False"]
    mysql_server.drop_database("etl_replay_alone")

    def built(database: str) -> dict:
        rows = snapshot(mysql_server, database)["rows"]
        return {**catalog(mysql_server, database), "rows": rows}

    assert built("etl_by_replay") == built("etl_after_damage") == built("etl_first_build")
    assert built("etl_by_replay")["triggers"]  # MLflow's schema has one on MySQL (secrets)


def test_targets_refused_before_anything_is_made(tree, mysql_server, tmp_path):
    """Each refusal is one line (exit 2) naming the cause and, where there is one, the fix, with no
    password in it; nothing is created on the server: a database that stores text as latin1 (no
    emoji), a password the server rejects, a database that does not exist, a user who may not
    create the staging database, a port nobody listens on."""
    from tests.mysql_server import USER
    from tests.pg_server import _free_port

    latin1 = mysql_server.create_database("etl_latin1", charset="latin1", collation=None)
    limited = "etl_limited"
    mysql_server.create_database(limited)
    mysql_server.sql("CREATE USER IF NOT EXISTS 'etl_small'@'%' IDENTIFIED BY 'small-pw-0'",
                     f"GRANT ALL ON `{limited}`.* TO 'etl_small'@'%'")
    before = {db: snapshot(mysql_server, db) for db in ("etl_latin1", limited)}
    cases = [
        (latin1, ["stores text as latin1", "ALTER DATABASE `etl_latin1` CHARACTER SET utf8mb4"]),
        (mysql_server.uri("etl_latin1", password="not-the-password"), ["refused the connection", "Access denied"]),
        (mysql_server.uri("etl_no_such_database"), ["does not exist", "CREATE DATABASE `etl_no_such_database`"]),
        (mysql_server.uri(limited, user="etl_small", password="small-pw-0"),
         ["does not let this user create databases", "GRANT ALL ON `etl\\_migrate\\_staging\\_%`"]),
        (f"mysql://{USER}:{PASSWORD}@127.0.0.1:{_free_port()}/mlflow", ["cannot connect to MySQL target"]),
    ]
    for uri, needles in cases:
        result = run_cli("--source", str(tree), "--target", uri, "-q")
        assert result.returncode == 2, (uri, result.stderr[-2000:])
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert all(n in result.stderr for n in needles), (needles, result.stderr)
        assert_no_password(result.stdout, result.stderr)
        assert "not-the-password" not in result.stderr and "small-pw-0" not in result.stderr
    assert {db: snapshot(mysql_server, db) for db in ("etl_latin1", limited)} == before
    assert "etl_no_such_database" not in mysql_server.databases()
