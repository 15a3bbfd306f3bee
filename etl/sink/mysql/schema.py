"""MLflow's schema in a MySQL staging database: built by MLflow's own migrations once per MLflow
release, server and database collation, what they built recorded, and re-created from that
recording by later runs.

MLflow's ~70 migrations send ~290 DDL statements to MySQL, and InnoDB makes each one a file
operation (every ALTER rebuilds its table): 40-130 s measured on a busy 2-core machine, and
replaying their SQL costs the same. What they leave in an empty database is, up to the order of
a table's indexes, a pure function of the MLflow release (its migration files,
``etl.sink.target.schema_key``), the server (flavor and version: SQLAlchemy's dialect and the
migrations' own checks follow them) and the database's default character set and collation (every
table takes them). So the first build's result is recorded: SHOW CREATE TABLE of each table, SHOW
CREATE TRIGGER of each trigger (without its DEFINER: MLflow's migration names none, so a trigger
belongs to whoever creates it) and the rows the migrations wrote (the alembic stamp, the default
workspace). Later runs create those tables directly (8-21 s on that machine).
tests/integration/test_mysql_target.py holds a re-created schema against one MLflow's migrations
built, order-free (the migrations themselves create a table's indexes in no fixed order).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from etl.errors import MigrationError
from etl.observe import log
from etl.sink.target import cache_dir, read_cached, schema_head, schema_key, write_cached

# Bumped when the file's content changes meaning (2: the head revision it was made at).
FORMAT = 2
_PLAIN = (str, int, float, bool, type(None))
# The staging database's own table (see staging.py), which is no part of MLflow's schema.
RUN_TABLE = "etl_migrate_run"
_DEFINER = re.compile(r"^CREATE\s+DEFINER\s*=\s*(?:`[^`]*`|'[^']*'|[^@\s]+)@(?:`[^`]*`|'[^']*'|\S+)\s+",
                      re.IGNORECASE)


def quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


@dataclass(frozen=True)
class Trigger:
    """A trigger as SHOW CREATE TRIGGER gives it: its statement names its table without a
    database, so it is created in whichever database the connection uses."""

    name: str
    table: str
    sql_mode: str
    statement: str


def server_tag(conn) -> str:
    """mariadb-10.11 or mysql-8.0: what the recorded schema depends on of the server."""
    with conn.cursor() as cur:
        cur.execute("SELECT VERSION()")
        version = cur.fetchone()[0]
    flavor = "mariadb" if "mariadb" in version.lower() else "mysql"
    return f"{flavor}-{'.'.join(version.split('-')[0].split('.')[:2])}"


def database_defaults(conn, database: str) -> tuple[str, str] | None:
    """(character set, collation) a new table of ``database`` takes; None if it does not exist."""
    with conn.cursor() as cur:
        cur.execute("SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA "
                    "WHERE SCHEMA_NAME = %s", (database,))
        row = cur.fetchone()
    return (row[0], row[1]) if row else None


def tables(conn, database: str) -> list[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                    "AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME", (database,))
        return [r[0] for r in cur.fetchall()]


def mlflow_tables(conn, database: str) -> list[str]:
    """The tables of a staging database that MLflow's migrations made."""
    return [t for t in tables(conn, database) if t != RUN_TABLE]


def triggers(conn, database: str) -> list[Trigger]:
    found = []
    with conn.cursor() as cur:
        cur.execute("SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE FROM information_schema.TRIGGERS "
                    "WHERE TRIGGER_SCHEMA = %s ORDER BY EVENT_OBJECT_TABLE, ACTION_ORDER", (database,))
        for name, table in cur.fetchall():
            cur.execute(f"SHOW CREATE TRIGGER {quote(database)}.{quote(name)}")
            _, sql_mode, statement, *_ = cur.fetchone()
            found.append(Trigger(name, table, sql_mode, _DEFINER.sub("CREATE ", statement)))
    return found


def create_trigger(conn, database: str, trigger: Trigger) -> None:
    """Create the trigger in database, under the sql_mode it was made with (MySQL keeps it)."""
    with conn.cursor() as cur:
        cur.execute("SELECT DATABASE(), @@SESSION.sql_mode")
        used, mode = cur.fetchone()
        cur.execute(f"USE {quote(database)}")
        cur.execute("SET SESSION sql_mode = %s", (trigger.sql_mode,))
        try:
            cur.execute(trigger.statement)
        finally:
            cur.execute("SET SESSION sql_mode = %s", (mode,))
            if used:
                cur.execute(f"USE {quote(used)}")


def script_path(server: str, charset: str, collation: str) -> Path:
    return cache_dir() / f"mysql-schema-{schema_key()}-{server}-{charset}-{collation}.json"


_COLUMN = re.compile(r"^\s+`((?:[^`]|``)+)` (\w+(?:\(\d+\))?)", re.MULTILINE)


def recorded_types(conn, database: str) -> dict[tuple[str, str], str] | None:
    """(table, column) -> its type (varchar(250), mediumtext, ...) in the recording of MLflow's
    schema for this server and a database like ``database`` (its character set and collation);
    None when no run has recorded one yet."""
    charset, collation = database_defaults(conn, database)
    recording = read_cached(script_path(server_tag(conn), charset, collation), FORMAT)
    if recording is None:
        return None
    types = {}
    for statement in recording["tables"]:
        table = statement.split("`", 2)[1]
        for column, column_type in _COLUMN.findall(statement):
            types[(table, column.replace("``", "`"))] = column_type
    return types


def create_schema(target, staging: str) -> str:
    """MLflow's empty schema in the (empty) staging database; returns how: "replayed" or
    "migrated"."""
    import pymysql

    conn = target.connect(staging)
    try:
        charset, collation = database_defaults(conn, staging)
        path = script_path(server_tag(conn), charset, collation)
        recording = read_cached(path, FORMAT)
        if recording is not None:
            try:
                replay(conn, staging, recording)
                # The recording's name holds the installed MLflow's version and migrations
                # (schema_key), so the head it was made at is that MLflow's: asking MLflow itself
                # would import it into this process for the rest of the run (~190 MB).
                check_stamp(conn, recording.get("head"))
                return "replayed"
            except (pymysql.Error, MigrationError) as e:
                log.warning("recorded schema did not replay; running MLflow's migrations instead",
                            script=str(path), error=str(e).splitlines()[0] if str(e) else type(e).__name__)
                path.unlink(missing_ok=True)
                clear(conn, staging)
        migrate(target, staging)
        head = schema_head()
        check_stamp(conn, head)
        recording = record(conn, staging)
        if recording is not None:
            write_cached(path, FORMAT, {**recording, "head": head})
        return "migrated"
    finally:
        conn.close()


def migrate(target, staging: str) -> None:
    """What MLflow's SqlAlchemyStore runs on a new database (create the tables, upgrade to the
    head, stamp it), on connections made as etl-migrate makes its own."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from mlflow.store.db.utils import _initialize_tables

    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    engine = create_engine("mysql+pymysql://", creator=lambda: target.connect(staging, autocommit=False),
                           poolclass=NullPool)
    try:
        _initialize_tables(engine)
    finally:
        engine.dispose()


def check_stamp(conn, head: str | None) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT version_num FROM alembic_version")
        stamps = [r[0] for r in cur.fetchall()]
    if stamps != [head]:
        raise MigrationError(f"the staging database's alembic version is {stamps}, not the installed "
                             f"MLflow's head {head}")


def record(conn, staging: str) -> dict | None:
    """The tables, triggers and rows of the staging database, or None when they cannot be
    re-created elsewhere (a view or routine, which the recording does not hold; a statement that
    names the staging database)."""
    with conn.cursor() as cur:
        cur.execute("SELECT (SELECT COUNT(*) FROM information_schema.VIEWS WHERE TABLE_SCHEMA = %s) + "
                    "(SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s)",
                    (staging, staging))
        if cur.fetchone()[0]:
            return None
        created, rows = [], []
        for table in mlflow_tables(conn, staging):
            cur.execute(f"SHOW CREATE TABLE {quote(table)}")
            created.append(cur.fetchone()[1])
            cur.execute(f"SELECT * FROM {quote(table)}")
            data = cur.fetchall()
            if data:
                columns = [d[0] for d in cur.description]
                rows.append([table, columns, [list(r) for r in data]])
    recorded = {"tables": created, "triggers": [[t.name, t.table, t.sql_mode, t.statement]
                                                for t in triggers(conn, staging)], "rows": rows}
    plain = all(type(v) in _PLAIN for _, _, data in rows for row in data for v in row)
    return recorded if plain and staging not in json.dumps(recorded) else None


def replay(conn, staging: str, recording: dict) -> None:
    with conn.cursor() as cur:
        # Tables refer to each other; their foreign keys are complete once all exist. A row's 0
        # in an AUTO_INCREMENT column is its id, not "the next one".
        cur.execute("SELECT @@SESSION.sql_mode")
        (mode,) = cur.fetchone()
        cur.execute("SET SESSION foreign_key_checks = 0")
        cur.execute("SET SESSION sql_mode = CONCAT(@@SESSION.sql_mode, ',NO_AUTO_VALUE_ON_ZERO')")
        try:
            for statement in recording["tables"]:
                cur.execute(statement)
            for table, columns, data in recording["rows"]:
                names = ", ".join(map(quote, columns))
                marks = ", ".join(["%s"] * len(columns))
                cur.executemany(f"INSERT INTO {quote(table)} ({names}) VALUES ({marks})", data)
        finally:
            cur.execute("SET SESSION foreign_key_checks = 1")
            cur.execute("SET SESSION sql_mode = %s", (mode,))
    for name, table, sql_mode, statement in recording["triggers"]:
        create_trigger(conn, staging, Trigger(name, table, sql_mode, statement))
    conn.commit()


def clear(conn, database: str) -> None:
    """Drop MLflow's tables from database (what a replay that failed halfway made)."""
    with conn.cursor() as cur:
        cur.execute("SET SESSION foreign_key_checks = 0")
        for table in mlflow_tables(conn, database):
            cur.execute(f"DROP TABLE {quote(database)}.{quote(table)}")
        cur.execute("SET SESSION foreign_key_checks = 1")
