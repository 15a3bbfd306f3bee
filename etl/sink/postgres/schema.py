"""MLflow's schema in a PostgreSQL staging schema: built by MLflow's own migrations once per MLflow
release and server major version, its SQL recorded, and replayed by later runs.

Importing MLflow and alembic and running ~70 migrations costs seconds on every run; the statements
those migrations send to an empty schema are a pure function of the MLflow release (its migration
files, ``etl.sink.target.schema_key``) and the server's major version (which SQLAlchemy's dialect
follows). So the first build records every statement, with its parameters, exactly as SQLAlchemy
hands it to psycopg, and later runs send the same statements in the same order, in one
transaction, on a connection whose search_path is their own staging schema: the same empty
schema, alembic stamp and seed rows. tests/integration/test_postgres_schema.py holds a replayed
schema against one built by the migrations, catalog by catalog.

A recording is kept only when it can be replayed anywhere: every statement names its objects
without a schema (the staging schema's name is in none of them) and every parameter is a plain
JSON value. A recording that no longer replays (a changed server, a damaged file) is removed and
the migrations run instead.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from etl.observe import log
from etl.sink.target import cache_dir, read_cached, schema_key, write_cached

# Bumped when the file's content changes meaning (2: the statements under "content").
FORMAT = 2
_PLAIN = (str, int, float, bool, type(None))
# Half of what the migrations send is SQLAlchemy reflecting the catalog to decide what to do:
# SELECTs that change nothing, and need not be sent again. A SELECT is left out only when every
# function it calls is one of these (catalog lookups, aggregates); any other (nextval, setval,
# a lock) keeps it in the recording.
_READ_ONLY_CALLS = frozenset(
    "in cast any when then and from join array_agg unnest generate_subscripts min max count sum "
    "bool_and json_build_object current_setting format_type pg_table_is_visible "
    "pg_collation_is_visible pg_get_expr pg_get_constraintdef pg_get_indexdef "
    "pg_get_serial_sequence coalesce exists not".split()
)
_CALL = re.compile(r"(\w+)\s*\(")


def script_path(server_major: int) -> Path:
    return cache_dir() / f"postgres-schema-{schema_key()}-pg{server_major}.json"


def create_schema(target, staging: str) -> str:
    """MLflow's empty schema in ``staging``; returns how: "replayed" or "migrated"."""
    import psycopg

    with target.connect(staging, autocommit=False) as conn:
        path = script_path(conn.info.server_version // 10000)
        statements = read_cached(path, FORMAT)
        if statements is not None:
            try:
                with conn.transaction():
                    replay(conn, statements)
                return "replayed"
            except psycopg.Error as e:
                log.warning("recorded schema did not replay; running MLflow's migrations instead",
                            script=str(path), error=str(e).splitlines()[0] if str(e) else type(e).__name__)
                path.unlink(missing_ok=True)
    statements = [s for s in migrate(target.url_for(staging)) if not _reads_only(s[0])]
    if replayable(statements, staging):
        write_cached(path, FORMAT, statements)
    return "migrated"


def migrate(url) -> list[list]:
    """Run MLflow's migrations (what its SqlAlchemyStore runs on a new database) and return every
    statement sent, as [sql, parameters, executemany]."""
    import logging

    from sqlalchemy import create_engine, event
    from sqlalchemy.pool import NullPool

    from mlflow.store.db.utils import _initialize_tables

    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    engine = create_engine(url, poolclass=NullPool)
    statements: list[list] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _record(conn, cursor, statement, parameters, context, executemany):
        statements.append([statement, _plain(parameters), executemany])

    try:
        _initialize_tables(engine)
    finally:
        engine.dispose()
    return statements


def _plain(value):
    """SQLAlchemy's parameter containers (immutabledict, quoted_name) as plain JSON values; any
    other type stays as it is, and so keeps the recording from being saved."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


def _reads_only(sql: str) -> bool:
    return sql.lstrip()[:6].upper() == "SELECT" and all(
        name.lower() in _READ_ONLY_CALLS for name in _CALL.findall(sql))


def replayable(statements: list[list], staging: str) -> bool:
    def plain(value) -> bool:
        if isinstance(value, dict):
            return all(plain(v) for v in value.values())
        if isinstance(value, list):
            return all(plain(v) for v in value)
        return type(value) in _PLAIN

    return all(staging not in sql and staging not in json.dumps(params) and plain(params)
               for sql, params, _ in statements)


def replay(conn, statements: list[list]) -> None:
    with conn.cursor() as cur:
        for sql, params, executemany in statements:
            if executemany:
                cur.executemany(sql, params)
            else:
                cur.execute(sql, params)
