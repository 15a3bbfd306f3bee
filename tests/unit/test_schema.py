"""The cached schema template is exactly what MLflow's own store creates on a new database.

etl-migrate builds it with no journal file and no fsync per migration step (a scratch file until
it is complete); the tables, indexes, constraints and the stamped alembic head must be the same
as those of a database MLflow's SqlAlchemyStore initialises with its defaults.
"""

from __future__ import annotations

import sqlite3

from etl.sink.sqlite import schema


def _canonical(sql: str | None) -> tuple[str, ...] | None:
    # Alembic's batch mode rebuilds a table with its CHECK constraints in set order, which
    # PYTHONHASHSEED varies from one process to the next: compare the lines, not their order.
    if sql is None:
        return None
    return tuple(sorted(line.strip().rstrip(",").strip() for line in sql.splitlines()))


def _schema(path) -> tuple[list, list]:
    conn = sqlite3.connect(path)
    try:
        objects = [
            (kind, name, table, _canonical(sql))
            for kind, name, table, sql in conn.execute(
                "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
            )
        ]
        head = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        return objects, head
    finally:
        conn.close()


def test_template_matches_a_database_mlflow_initialises(tmp_path, monkeypatch):
    from sqlalchemy import create_engine

    from mlflow.store.db.utils import _get_latest_schema_revision, _initialize_tables

    monkeypatch.setenv("ETL_MIGRATE_CACHE_DIR", str(tmp_path / "cache"))
    template = schema.template_path()
    assert template.parent == tmp_path / "cache"

    reference = tmp_path / "mlflow.db"
    engine = create_engine(f"sqlite:///{reference}")
    try:
        _initialize_tables(engine)
    finally:
        engine.dispose()

    ours, theirs = _schema(template), _schema(reference)
    assert len(ours[0]) > 40
    assert ours == theirs
    assert ours[1] == [(_get_latest_schema_revision(),)]
    # nothing of the scratch build is left in the file: a rollback journal, not WAL
    conn = sqlite3.connect(template)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    finally:
        conn.close()
    assert [p.name for p in template.parent.iterdir()] == [template.name]
