"""The installed MLflow's schema, made by MLflow's own migrations, copied into the staging file.

Running MLflow's ~70 alembic migrations takes seconds; a migrated empty database is a pure
function of the MLflow release, so it is built once per release into a cache and copied after.
"""

from __future__ import annotations

import ast
import logging
import os
import re
import shutil
import sqlite3
import tempfile
from pathlib import Path

from etl.rows import COLUMNS
from etl.sink.target import cache_dir, check_column_lists, schema_key
from etl.sql_limits import INT64, ColumnLimit, Limits

def build_schema(path: Path) -> None:
    """An empty database at path, migrated to MLflow's alembic head by MLflow itself."""
    from sqlalchemy import create_engine, event

    # _initialize_tables is what MLflow's SqlAlchemyStore runs on a new database: create the
    # tables and stamp the alembic head. Its INFO chatter would only confuse our output.
    from mlflow.store.db.utils import _initialize_tables

    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    engine = create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _scratch_file(dbapi_connection, connection_record):
        # ~70 migration steps, each its own transaction: with the default journal and fsync that
        # is most of a first run (`mlflow migrate-filestore` builds its schema the same way). The
        # file is a scratch copy until it is complete, and neither setting is stored in it.
        dbapi_connection.execute("PRAGMA journal_mode=MEMORY")
        dbapi_connection.execute("PRAGMA synchronous=OFF")

    try:
        _initialize_tables(engine)
    finally:
        engine.dispose()


def template_path() -> Path:
    """The cached template for the installed MLflow, built on first use."""
    folder = cache_dir()
    template = folder / f"schema-{schema_key()}.db"
    if template.is_file():
        return template
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".schema-", suffix=".db", dir=folder)
    os.close(fd)
    try:
        os.unlink(tmp)
        build_schema(Path(tmp))
        fsync_file(tmp)  # built without fsync: make it durable once, before it becomes the template
        # Two first runs at once both build; the rename makes whichever lands last win whole.
        os.replace(tmp, template)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return template


def fsync_file(path) -> None:
    # Writable: Windows' fsync (_commit, FlushFileBuffers) refuses a read-only descriptor.
    fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_schema(staging: Path) -> None:
    """Put MLflow's empty schema into the (not yet existing) staging file."""
    try:
        template = template_path()
    except OSError:
        # No writable cache (read-only home, say): pay for the migrations in place instead.
        build_schema(staging)
    else:
        shutil.copyfile(template, staging)
    check_columns(staging)


def table_columns(conn: sqlite3.Connection, table: str) -> list[tuple[str, bool, bool]]:
    """(name, not_null, has_default) for each column of a staged table."""
    rows = conn.execute(f'PRAGMA table_info("{table}")').fetchall()
    return [(r[1], bool(r[3]), r[4] is not None) for r in rows]


def check_columns(staging: Path) -> None:
    """``check_column_lists`` on a staged SQLite file."""
    conn = sqlite3.connect(staging)
    try:
        check_column_lists(lambda table: table_columns(conn, table))
    finally:
        conn.close()


# CHECK (column IN ('a', 'b')) or CHECK (column IN (0, 1)), as MLflow's migrations write them.
_CHECK_IN = re.compile(r"""CHECK\s*\(\s*"?(\w+)"?\s+IN\s*\(([^)]*)\)\s*\)""", re.IGNORECASE)


def _declared_kind(declared: str) -> str:
    declared = declared.upper()
    if "INT" in declared:
        return "integer"
    if any(word in declared for word in ("FLOAT", "REAL", "DOUBLE", "NUMERIC")):
        return "real"
    return "boolean" if "BOOL" in declared else "text"


def _from_template(read):
    """read(path of a database MLflow's migrations built): the cached template, or a scratch
    build when there is no writable cache."""
    try:
        return read(template_path())
    except OSError:
        with tempfile.TemporaryDirectory() as folder:
            build_schema(Path(folder) / "schema.db")
            return read(Path(folder) / "schema.db")


def schema_limits() -> Limits:
    """The limits of the schema ``create_schema`` makes, without a staging file (a dry run)."""
    return _from_template(sqlite_limits)


def declared_types() -> dict[tuple[str, str], str]:
    """(table, column) -> the type MLflow's migrations declared (VARCHAR(250), BIGINT, ...), for
    every column we fill. SQLite keeps each declaration as written, whatever it enforces."""

    def read(database: Path) -> dict[tuple[str, str], str]:
        conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
        try:
            return {(table, r[1]): r[2] for table in COLUMNS
                    for r in conn.execute(f'PRAGMA table_info("{table}")')}  # fmt: skip
        finally:
            conn.close()

    return _from_template(read)


def sqlite_limits(database: Path) -> Limits:
    """What a SQLite database made by MLflow accepts in each column we fill: its own declared
    types, NOT NULL (and primary keys), and CHECK (... IN ...) constraints. SQLite integers are
    64-bit whatever the declared width, and it enforces no VARCHAR length."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        limits: Limits = {}
        for table in COLUMNS:
            (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
                                  (table,)).fetchone()
            choices = {m[1]: frozenset(ast.literal_eval(f"({m[2]},)")) for m in _CHECK_IN.finditer(sql)}
            for _cid, name, declared, not_null, _default, pk in conn.execute(f'PRAGMA table_info("{table}")'):
                kind = _declared_kind(declared)
                limits[(table, name)] = ColumnLimit(
                    kind, nullable=not (not_null or pk), int_range=INT64 if kind == "integer" else None,
                    choices=choices.get(name),
                )
        return limits
    finally:
        conn.close()
