"""The MySQL / MariaDB target: MLflow's tables in one database, staged in a database of their own
and moved in by one RENAME TABLE.

    target database    the one the URI names (a MySQL "schema" is a database): where MLflow itself
                       would make its tables
    staging database   etl_migrate_staging_<pid>_<time> on the same server, with the target's
                       character set and collation: MLflow's schema made by its own migrations
                       (their result recorded once and re-created after: schema.py), loaded, then
                       verified; a table in it, etl_migrate_run, names the target and records
                       the promotion's progress
    named locks        GET_LOCK per target database keeps two runs apart; one per staging
                       database tells a live run's staging from one a killed run left (the
                       server frees a dead session's locks), which the next run removes

Promotion is ONE multi-table ``RENAME TABLE``: the target's own MLflow tables, when MLflow made
them empty already, out into the staging database, and every staged table in. MySQL (8.0, atomic
DDL) and MariaDB (10.6 on) perform all the renames of one statement or none, also when the server
crashes in the middle, and no other session sees the tables in between; a client killed meanwhile
does not stop the server's statement. So a kill -9 at any moment leaves the target as it was, or
promoted whole. Before the rename, under the target's lock (no other etl-migrate) the target is
checked to hold no MLflow data; a writer could still slip a row in before the rename takes the
tables, so what came out is counted again after it, and if it holds a row the same kind of rename
puts everything back and the migrated database is kept aside, named in the error.

Triggers cannot move between databases (both servers refuse to rename a table with a trigger
into another one; MLflow's secrets table has one): they are taken off the staged tables and
recorded in etl_migrate_run before the rename, and made again in the target right after it. A
target table with a trigger moves out by a rename inside the target database instead, and is
dropped, trigger and all, before the new trigger is made. A run killed between the rename and the
trigger leaves a promoted target without it for a moment: the next run finishes that (it reads
what to make from etl_migrate_run) before it does anything else.

Passwords come from the URI, MYSQL_PWD or an option file (etl.verify.connect.mysql_options); none
is ever printed. MLflow's MLFLOW_MYSQL_SSL_CA/CERT/KEY are honoured as its own engine does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from contextlib import suppress

from etl.errors import MigrationError, NotPromoted, TargetError, TargetHoldsData
from etl.keys import KEY_COLUMNS
from etl.observe import log
from etl.rows import COLUMNS, TABLES
from etl.sink.mysql.schema import (
    RUN_TABLE,
    Trigger,
    create_trigger,
    database_defaults,
    mlflow_tables,
    quote,
    tables,
    triggers,
)
from etl.sink.target import (
    SAMPLE_EXPERIMENT_NAMES,
    SAMPLE_RUN_IDS,
    SCHEMA_SEED_TABLES,
    check_column_lists,
    hold_for_test,
    redact,
    sample_query,
    shown_data,
)
from etl.sql_limits import INT16, INT32, INT64, ColumnLimit, Limits

# MySQL's INT, the type of MLflow's experiment_id.
MYSQL_INT_MAX = 2**31 - 1
INT_RANGES = {"tinyint": (-(2**7), 2**7 - 1), "smallint": INT16, "mediumint": (-(2**23), 2**23 - 1),
              "int": INT32, "integer": INT32, "bigint": INT64}
# What a text column holds in UTF-8 bytes (VARCHAR counts characters instead).
TEXT_BYTES = {"tinytext": 2**8 - 1, "text": 2**16 - 1, "mediumtext": 2**24 - 1, "longtext": 2**32 - 1}
STAGING_PREFIX = "etl_migrate_staging_"
# A verified database the target could not take (it gained data during the run) is kept under
# this prefix, which stale-staging removal leaves alone.
KEPT_PREFIX = "etl_migrate_kept_"
# The target's own empty MLflow tables, renamed out of the way by the promotion: into a database
# of their own (the staging database's name + OLD_SUFFIX; InnoDB names foreign keys per database,
# and the staged tables' keys have the same names), or, a table with a trigger, inside the target.
OLD_PREFIX = "etl_migrate_old_"
OLD_SUFFIX = "_old"
# The staging database's own table (RUN_TABLE) holds (kind, name, detail) rows. kind "target":
# the database it is for; "trigger": a trigger to make in the target after the rename;
# "promoting": the rename was about to run; "kept": --keep-failed kept it.
# How long promotion waits for MLflow's tables in the target (a server's open transactions).
PROMOTE_LOCK_TIMEOUT = 30
DRIVERS = ("mysql", "mysql+pymysql")
# Tests only: the promotion waits after its rename until this file exists, so a test can kill it
# between the rename and the triggers.
HOLD_AFTER_RENAME = "ETL_MIGRATE_TEST_HOLD_AFTER_RENAME"
# MySQL error numbers that mean the user, not the tool, must act.
ACCESS_DENIED = {1044, 1045, 1142, 1227, 1370, 1410}
CANNOT_CONNECT = {2002, 2003, 2005, 2006, 2013, 1130, 1129, 1203}
UNKNOWN_DATABASE = 1049


def _pymysql():
    import pymysql

    return pymysql


def first_line(error: Exception) -> str:
    args = getattr(error, "args", ())
    text = str(args[1]) if len(args) >= 2 else str(error)
    return redact((text.strip() or type(error).__name__).splitlines()[0])


def error_code(error: Exception) -> int | None:
    args = getattr(error, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def lock_name(kind: str, database: str) -> str:
    """A GET_LOCK name (at most 64 characters) for a database."""
    return f"etl-migrate:{kind}:{hashlib.sha1(database.encode()).hexdigest()}"


class MysqlTarget:
    max_experiment_id = MYSQL_INT_MAX

    def __init__(self, uri: str):
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        from etl.verify.connect import mysql_options

        self.display = redact(uri)
        try:
            url = make_url(uri)
        except (ArgumentError, ValueError) as e:
            raise TargetError(f"target {self.display!r} is not a valid MySQL URI ({e})") from None
        if url.drivername not in DRIVERS:
            raise TargetError(
                f"target driver {url.drivername!r} is not supported; use mysql:// or mysql+pymysql:// "
                "(etl-migrate connects with PyMySQL, the driver MLflow documents)"
            )
        if not url.database:
            raise TargetError(f"target {self.display!r} names no database (mysql://user@host:3306/DATABASE)")
        try:
            options = mysql_options(uri)
        except ValueError as e:
            raise TargetError(f"target {self.display!r}: {e}") from None
        self.url = url.set(drivername="mysql+pymysql")
        self.database = url.database
        server = self.display.split("://", 1)[1]
        if options.get("read_default_file") and "read_default_file" not in url.query:
            # The password came from ~/.my.cnf; MLflow's engine reads an option file only when told.
            server += ("&" if "?" in server else "?") + f"read_default_file={options['read_default_file']}"
        # MLflow's plain mysql:// needs mysqlclient; PyMySQL came with etl-migrate, and a server in
        # an environment of its own gets it beside MLflow.
        self.server_uri = "mysql+pymysql://" + server
        self.server_packages = ("pymysql",)
        self.where = f"database {self.database!r} on {self.display.split('@')[-1].split('/')[0]}"

    # --- connections -----------------------------------------------------------------------

    def locator(self, database: str | None = None) -> str:
        """What the verifier and counts() connect to (etl.verify.connect), read-only."""
        return self.url.set(database=database or self.database).render_as_string(hide_password=False)

    def connect(self, database: str | None = None, autocommit: bool = True, **extra):
        """A connection to the server (to ``database``, if given) with a utf8mb4 session."""
        from etl.verify.connect import mysql_options

        pymysql = _pymysql()
        options = mysql_options(self.locator(database))
        if database is None:
            options.pop("database", None)
        options.setdefault("connect_timeout", 15)
        try:
            return pymysql.connect(**options, autocommit=autocommit, program_name="etl-migrate", **extra)
        except pymysql.Error as e:
            code = error_code(e)
            if code == UNKNOWN_DATABASE:
                raise TargetError(
                    f"database {database!r} does not exist on {self.display}; create it first: CREATE "
                    f"DATABASE `{database}` CHARACTER SET utf8mb4") from None
            if code in ACCESS_DENIED:
                raise TargetError(f"the server refused the connection to {self.display}: {first_line(e)}") from None
            raise TargetError(f"cannot connect to MySQL target {self.display}: {first_line(e)}") from None

    # --- checks ----------------------------------------------------------------------------

    def check_free(self) -> None:
        """Reachable, storing 4-byte UTF-8 end to end, and holding no MLflow data. A promotion a
        killed run left unfinished (renamed in, its triggers not made: see the module's summary)
        is finished first, under the target's lock; the target then holds that run's data."""
        conn = self.connect(self.database)
        try:
            check_character_sets(conn, self.database)
            lock = lock_name("target", self.database)
            if _get_lock(conn, lock):  # else another run holds it: its staging says so
                try:
                    remove_leftovers(conn, self.database)
                finally:
                    _release_lock(conn, lock)
            refuse_if_filled(conn, self.database, self.display)
        finally:
            conn.close()

    def expected_limits(self) -> Limits:
        """For a dry run, which stages nothing: the limits a staged schema would have (see
        ``MysqlStaging.column_limits``). Exact from the recording of MLflow's schema once a run
        has made one for this server and collation (etl.sink.mysql.schema); before that, from the
        types MLflow's migrations declare, as the SQLite template keeps them (VARCHAR(n), INTEGER,
        TEXT), a TEXT column's MySQL type from MLflow's table definitions compiled for MySQL.
        Those miss a MySQL-only widening a migration made without its model (datasets'
        dataset_schema is MEDIUMTEXT, the model says TEXT): the dry run is stricter there, never
        laxer. A test holds both against a staged schema."""
        from sqlalchemy.dialects import mysql

        from etl.sink.mysql.schema import recorded_types
        from etl.sink.sqlite.schema import declared_types, schema_limits

        conn = self.connect(self.database)
        try:
            recorded = recorded_types(conn, self.database)
        finally:
            conn.close()
        if recorded is None:
            dialect = mysql.dialect()
            compiled = {(table.name, column.name): column.type.compile(dialect=dialect)
                        for table in mlflow_models() if table.name in COLUMNS for column in table.columns}
            recorded = {key: compiled.get(key, declared) if declared.strip().upper() == "TEXT" else declared
                        for key, declared in declared_types().items()}
        limits = dict(schema_limits())
        for key, column_type in recorded.items():
            if key in limits:
                limits[key] = _mysql_limit(limits[key], key[1], column_type)
        return limits

    def expected_folding(self):
        """For a dry run: how a staged schema would compare keys, from the target database's
        default collation (every table MLflow makes takes it)."""
        from etl.sink.mysql.collation import KeyFolding

        conn = self.connect(self.database)
        try:
            _, collation = database_defaults(conn, self.database)
        finally:
            conn.close()
        return KeyFolding(self, dict.fromkeys(KEY_COLUMNS, collation))

    def staging(self, keep_failed: bool = False) -> MysqlStaging:
        return MysqlStaging(self, keep_failed)

    def staging_glob(self) -> str:
        # A staging database left by a killed run is removed by the next run: no files to remove.
        return ""

    def existing(self) -> str:
        conn = self.connect(self.database)
        try:
            present = set(tables(conn, self.database))
        finally:
            conn.close()
        missing = {"alembic_version", "experiments", "runs"} - present
        if missing:
            raise TargetError(f"target {self.display} is not an MLflow database "
                              f"(no {', '.join(sorted(missing))} table)")
        return self.locator()

    @staticmethod
    def counts(locator: str) -> dict[str, int]:
        from etl.verify.connect import connect

        conn = connect(locator)
        try:
            return {t: conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in TABLES}
        finally:
            conn.close()


def mlflow_models():
    """MLflow's SQLAlchemy tables (tracking and registry), as its models declare them."""
    import mlflow.store.model_registry.dbmodels.models  # noqa: F401 - registers the registry tables
    from mlflow.store.db.base_sql_model import Base

    return Base.metadata.sorted_tables


def _mysql_limit(limit: ColumnLimit, column: str, column_type: str) -> ColumnLimit:
    """What MySQL adds to a column's limit (a type as information_schema's COLUMN_TYPE or
    SQLAlchemy's MySQL dialect writes it: varchar(250), int(11), MEDIUMTEXT, ...): VARCHAR counts
    characters, TEXT types UTF-8 bytes, integers have their declared width. tinyint(1) is a
    boolean. experiment_id keeps the 64-bit range: ids beyond 32 bits are renumbered
    (etl.source.layout.experiment_id_map), never refused."""
    name = column_type.lower().split("(")[0].split()[0]
    if name in ("varchar", "char"):
        return dataclasses.replace(limit, max_length=int(column_type.split("(")[1].split(")")[0]))
    if name in TEXT_BYTES:
        return dataclasses.replace(limit, max_bytes=TEXT_BYTES[name])
    if name in INT_RANGES and limit.kind == "integer" and column != "experiment_id":
        return dataclasses.replace(limit, int_range=INT_RANGES[name])
    return limit


def check_character_sets(conn, database: str) -> None:
    """MLflow's tables take the database's character set, and text crosses the connection in its
    character set: both must be utf8mb4, or 4-byte UTF-8 (emoji, which MLflow names and tags may
    hold) cannot arrive intact."""
    defaults = database_defaults(conn, database)
    with conn.cursor() as cur:
        cur.execute("SELECT DEFAULT_COLLATE_NAME FROM information_schema.CHARACTER_SETS "
                    "WHERE CHARACTER_SET_NAME = 'utf8mb4'")
        row = cur.fetchone()
        if row is None:
            raise TargetError("the server has no utf8mb4 character set; MLflow's data needs it (MySQL 5.5.3 or later)")
        if defaults[0] != "utf8mb4":
            raise TargetError(
                f"database {database!r} stores text as {defaults[0]} ({defaults[1]}), which cannot hold 4-byte "
                "UTF-8 such as emoji; MLflow's tables take the database's character set. Fix: ALTER "
                f"DATABASE `{database}` CHARACTER SET utf8mb4 COLLATE {row[0]}"
            )
        cur.execute("SELECT @@character_set_client, @@character_set_connection, @@character_set_results")
        session = cur.fetchone()
    if any(s != "utf8mb4" for s in session):
        raise TargetError(
            f"the server set this connection's character sets to {'/'.join(map(str, session))} (an "
            "init_connect or skip-character-set-client-handshake setting?); 4-byte UTF-8 would not "
            "arrive intact. Fix the server's setting so that clients asking for utf8mb4 get it"
        )


def filled_tables(conn, pairs) -> dict[str, int]:
    """Of the (database, table) pairs, those holding data beyond what MLflow's own initialization
    writes (the alembic stamp, the default workspace, the Default experiment alone)."""
    filled = {}
    with conn.cursor() as cur:
        for database, table, name in pairs:
            if name in SCHEMA_SEED_TABLES:
                continue
            query = f"SELECT COUNT(*) FROM {quote(database)}.{quote(table)}"
            if name == "experiments":
                query += " WHERE NOT (experiment_id = 0 AND name = 'Default')"
            cur.execute(query)
            count = cur.fetchone()[0]
            if count:
                filled[name] = count
    return filled


def refuse_if_filled(conn, database: str, display: str) -> None:
    present = [t for t in tables(conn, database) if t in COLUMNS or t == "experiments"]
    filled = filled_tables(conn, [(database, t, t) for t in present])
    if not filled:
        return

    def rows(query: str) -> list[tuple]:
        with conn.cursor() as cur:
            cur.execute(query)
            return list(cur.fetchall())

    def count(table: str, where: str | None) -> int:
        if table not in present:
            return 0
        return rows(f"SELECT COUNT(*) FROM {quote(database)}.{quote(table)}" + (f" WHERE {where}" if where else ""))[0][0]

    def sample(what: tuple[str, str, str]) -> set:
        table = what[1]
        if table not in present:
            return set()
        return {r[0] for r in rows(sample_query(what, f"{quote(database)}.{quote(table)}"))}

    raise TargetHoldsData(display, shown_data(count, filled), sample(SAMPLE_RUN_IDS),
                          sample(SAMPLE_EXPERIMENT_NAMES), hint="Choose another database.")


def _get_lock(conn, name: str) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT GET_LOCK(%s, 0)", (name,))
        return cur.fetchone()[0] == 1


def _release_lock(conn, name: str) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT RELEASE_LOCK(%s)", (name,))


def _rename(conn, pairs: list[tuple[str, str, str, str]]) -> None:
    """One RENAME TABLE for every (database, table) -> (database, table): all or none."""
    moves = ", ".join(f"{quote(a)}.{quote(b)} TO {quote(c)}.{quote(d)}" for a, b, c, d in pairs)
    with conn.cursor() as cur:
        cur.execute(f"RENAME TABLE {moves}")


def _run_rows(conn, database: str) -> list[tuple[str, str, str]] | None:
    """The staging database's etl_migrate_run rows, or None if it has no such table."""
    if RUN_TABLE not in tables(conn, database):
        return None
    with conn.cursor() as cur:
        cur.execute(f"SELECT kind, name, detail FROM {quote(database)}.{quote(RUN_TABLE)} ORDER BY id")
        return [tuple(r) for r in cur.fetchall()]


def remove_leftovers(conn, database: str) -> None:
    """Remove what killed runs into ``database`` left (their staging databases), and finish a
    promotion that renamed but did not make its triggers. The caller holds the target's lock."""
    with conn.cursor() as cur:
        cur.execute("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE %s",
                    (STAGING_PREFIX.replace("_", "\\_") + "%",))
        stale = [r[0] for r in cur.fetchall()]
    for name in stale:
        owner = name[: -len(OLD_SUFFIX)] if name.endswith(OLD_SUFFIX) else name
        if owner != name and owner in stale:
            continue  # removed with the run's staging database
        lock = lock_name("staging", owner)
        # A live run holds its staging database's lock; a killed run's session is gone.
        if not _get_lock(conn, lock):
            continue
        try:
            if owner != name:
                _drop_old_tables(conn, name)
                continue
            rows = _run_rows(conn, name)
            if rows is not None and ("target", database, None) not in rows:
                continue  # another target's: its own next run cleans it up
            if rows is not None and any(kind == "kept" for kind, _, _ in rows):
                continue
            if any(kind == "promoting" for kind, _, _ in rows or ()) and "alembic_version" not in tables(conn, name):
                made = complete_promotion(conn, database, name, rows)
                if made:
                    log.warning("made the trigger(s) a killed run's promotion had not made yet",
                                triggers=made, database=database)
            elif database_defaults(conn, name + OLD_SUFFIX) is not None:
                _drop_old_tables(conn, name + OLD_SUFFIX)
            log.info("removing staging database left by a killed run", database=name)
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {quote(name)}")
        finally:
            _release_lock(conn, lock)


def complete_promotion(conn, database: str, staging: str, rows: list[tuple[str, str, str]]) -> list[str]:
    """What follows the rename: drop the target's old empty tables (the ones with a trigger
    last: that frees the trigger's name), then make the staged tables' triggers in the target.
    Returns the triggers made; makes none that exists (a killed run's promotion may have)."""
    if database_defaults(conn, staging + OLD_SUFFIX) is not None:
        _drop_old_tables(conn, staging + OLD_SUFFIX)
    with conn.cursor() as cur:
        # Their foreign keys may refer to each other across the two databases.
        cur.execute("SET SESSION foreign_key_checks = 0")
        try:
            for table in tables(conn, database):
                if table.startswith(OLD_PREFIX) and not filled_tables(
                        conn, [(database, table, table[len(OLD_PREFIX):])]):
                    cur.execute(f"DROP TABLE {quote(database)}.{quote(table)}")
        finally:
            cur.execute("SET SESSION foreign_key_checks = 1")
    present = {t.name for t in triggers(conn, database)}
    made = []
    for kind, trigger_name, detail in rows:
        if kind == "trigger" and trigger_name not in present:
            table, sql_mode, statement = detail.split("\n", 2)
            create_trigger(conn, database, Trigger(trigger_name, table, sql_mode, statement))
            made.append(trigger_name)
    return made


def _drop_old_tables(conn, name: str) -> None:
    """Drop the database a promotion moved the target's empty tables into; unless a row was
    written into them while a killed run's promotion ran, which then stays there, named."""
    old = [(name, t, t[len(OLD_PREFIX):]) for t in tables(conn, name)]
    if filled_tables(conn, old):
        log.warning("kept the tables a killed run's promotion moved out of the target: they hold rows "
                    "written while it ran", database=name)
        return
    with conn.cursor() as cur:
        cur.execute("SET SESSION foreign_key_checks = 0")
        try:
            cur.execute(f"DROP DATABASE IF EXISTS {quote(name)}")
        finally:
            cur.execute("SET SESSION foreign_key_checks = 1")


class MysqlStaging:
    """The staging database: created under the target's named lock, dropped unless promoted."""

    def __init__(self, target: MysqlTarget, keep_failed: bool):
        self.target = target
        self.keep_failed = keep_failed
        self.name = f"{STAGING_PREFIX}{os.getpid()}_{int(time.time())}"
        self.locator = target.locator(self.name)
        self.kept = f"database {self.name} of {target.display.rsplit('/', 1)[0]}"
        self.promoted = False
        self.kept_aside = False
        # Renamed into the target, triggers not yet made: the staging database says which.
        self._renamed = False
        self._conn = None

    def __enter__(self) -> MysqlStaging:
        pymysql = _pymysql()
        conn = self._conn = self.target.connect()
        database = self.target.database
        try:
            if not _get_lock(conn, lock_name("target", database)):
                raise TargetError(f"another etl-migrate is migrating into {self.target.display}; wait for it to finish")
            check_character_sets(conn, database)
            remove_leftovers(conn, database)
            refuse_if_filled(conn, database, self.target.display)  # again, now that we hold the lock
            _get_lock(conn, lock_name("staging", self.name))
            charset, collation = database_defaults(conn, database)
            with conn.cursor() as cur:
                try:
                    cur.execute(f"CREATE DATABASE {quote(self.name)} CHARACTER SET {charset} COLLATE {collation}")
                except pymysql.Error as e:
                    if error_code(e) in ACCESS_DENIED:
                        raise TargetError(
                            f"the server does not let this user create databases ({first_line(e)}); "
                            "etl-migrate stages the migration in a database of its own, beside the target: "
                            f"GRANT ALL ON `{STAGING_PREFIX.replace('_', chr(92) + '_')}%`.* TO <user>, and "
                            f"`{KEPT_PREFIX.replace('_', chr(92) + '_')}%`.* likewise") from None
                    raise
                cur.execute(f"CREATE TABLE {quote(self.name)}.{quote(RUN_TABLE)} (id INT AUTO_INCREMENT "
                            "PRIMARY KEY, kind VARCHAR(16) NOT NULL, name VARCHAR(64) NOT NULL, detail LONGTEXT)")
                self._note("target", database)
        except BaseException:
            self._close()
            raise
        return self

    def _note(self, kind: str, name: str, detail: str | None = None, database: str | None = None) -> None:
        with self._conn.cursor() as cur:
            cur.execute(f"INSERT INTO {quote(database or self.name)}.{quote(RUN_TABLE)} (kind, name, detail) "
                        "VALUES (%s, %s, %s)", (kind, name, detail))

    def __exit__(self, exc_type, exc, tb) -> None:
        from etl.errors import VerificationFailed

        kept = self.keep_failed and exc_type is not None and issubclass(exc_type, VerificationFailed)
        try:
            if self._conn is not None and not (self.promoted or self.kept_aside or self._renamed):
                with suppress(Exception):  # the server may be gone; the next run cleans up
                    with self._conn.cursor() as cur:
                        if kept:
                            self._note("kept", self.name)
                        else:
                            cur.execute(f"DROP DATABASE IF EXISTS {quote(self.name)}")
                            cur.execute(f"DROP DATABASE IF EXISTS {quote(self.name + OLD_SUFFIX)}")
            elif self._conn is not None and self.promoted:
                with suppress(Exception):  # what remains: the run's table, the target's old empty ones
                    with self._conn.cursor() as cur:
                        cur.execute(f"DROP DATABASE IF EXISTS {quote(self.name)}")
                        cur.execute(f"DROP DATABASE IF EXISTS {quote(self.name + OLD_SUFFIX)}")
        finally:
            self._close()

    def _close(self) -> None:
        if self._conn is not None:
            with suppress(Exception):
                self._conn.close()
            self._conn = None

    # --- schema ----------------------------------------------------------------------------

    def create_schema(self) -> None:
        """MLflow's schema by MLflow's own migrations (or their recorded result re-created, see
        ``etl.sink.mysql.schema``) in the staging database."""
        from etl.sink.mysql.schema import create_schema

        how = create_schema(self.target, self.name)
        log.info("schema created", database=self.name, how=how)
        conn = self.target.connect(self.name)
        try:
            check_column_lists(lambda table: self._staged_columns(conn, table))
        finally:
            conn.close()

    def _staged_columns(self, conn, table: str) -> list[tuple[str, bool, bool]]:
        with conn.cursor() as cur:
            cur.execute("SELECT COLUMN_NAME, IS_NULLABLE, COLUMN_DEFAULT, EXTRA FROM information_schema.COLUMNS "
                        "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION", (self.name, table))
            return [(name, nullable == "NO", default is not None or "auto_increment" in extra.lower())
                    for name, nullable, default, extra in cur.fetchall()]

    def _columns(self) -> list[tuple[str, str, str, str | None]]:
        """(table, column, COLUMN_TYPE, COLLATION_NAME) of the tables the load fills."""
        conn = self.target.connect(self.name)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, COLLATION_NAME FROM information_schema.COLUMNS "
                            "WHERE TABLE_SCHEMA = %s", (self.name,))
                return [r for r in cur.fetchall() if r[0] in COLUMNS]
        finally:
            conn.close()

    def column_limits(self) -> Limits:
        """MLflow's constraints (types, NOT NULL, CHECK ... IN, as for SQLite) with what MySQL
        adds (``_mysql_limit``), read from the staged schema."""
        from etl.sink.sqlite.schema import schema_limits

        limits = dict(schema_limits())
        for table, column, column_type, _ in self._columns():
            limit = limits.get((table, column))
            if limit is not None:
                limits[(table, column)] = _mysql_limit(limit, column, column_type)
        return limits

    def key_folding(self):
        """How the staged tables compare their keys: each key column's collation, as the server
        reports it (etl.sink.mysql.collation)."""
        from etl.sink.mysql.collation import KeyFolding

        collations = {(t, c): collation for t, c, _, collation in self._columns()}
        return KeyFolding(self.target, {key: collations.get(key) for key in KEY_COLUMNS})

    def writer(self, batch_size: int):
        from etl.sink.mysql.writer import MysqlWriter

        return MysqlWriter(lambda **extra: self.target.connect(self.name, autocommit=False, **extra), batch_size)

    # --- promotion -------------------------------------------------------------------------

    def promote(self, verified: bool = True) -> None:
        """Check, then one RENAME TABLE; see the module's summary. A target that gained data or
        stays in use is not touched, and the staged database is kept (moved to a database no
        later run removes) and named in the error."""
        pymysql = _pymysql()
        conn, database, staging = self._conn, self.target.database, self.name
        staged = mlflow_tables(conn, staging)
        try:
            with conn.cursor() as cur:
                cur.execute(f"SET SESSION lock_wait_timeout = {PROMOTE_LOCK_TIMEOUT}")
            refuse_if_filled(conn, database, self.target.display)
            existing = [t for t in tables(conn, database) if t in staged]
            on_target = triggers(conn, database)
            triggered = {t.table for t in on_target}
            staged_triggers = triggers(conn, staging)
            # A trigger's name is the database's: one on a table the promotion leaves in place
            # would stop the staged trigger of that name from being made after the rename.
            taken = sorted({t.name for t in on_target if t.table not in staged} & {t.name for t in staged_triggers})
            if taken:
                raise TargetError(f"{self.target.display} has trigger(s) {', '.join(taken)} on tables that are not "
                                  "MLflow's; MLflow's schema needs the name(s): drop or rename them")
            old = self.name + OLD_SUFFIX
            if existing:
                charset, collation = database_defaults(conn, database)
                with conn.cursor() as cur:
                    cur.execute(f"CREATE DATABASE {quote(old)} CHARACTER SET {charset} COLLATE {collation}")
            for trigger in staged_triggers:
                self._note("trigger", trigger.name, f"{trigger.table}\n{trigger.sql_mode}\n{trigger.statement}")
                with conn.cursor() as cur:
                    cur.execute(f"DROP TRIGGER {quote(staging)}.{quote(trigger.name)}")
            self._note("promoting", "")
            # One statement: the target's empty tables out (first: their foreign keys' names are
            # the staged tables'), the staged ones in.
            out = [(database, t, database if t in triggered else old, OLD_PREFIX + t) for t in existing]
            _rename(conn, out + [(staging, t, database, t) for t in staged])
        except TargetError as e:
            self._keep_aside(staged)
            raise NotPromoted(e, self.target.display, self.kept, verified) from None
        except pymysql.Error as e:
            code = error_code(e)
            if code in (1205, 1050) or code in ACCESS_DENIED:
                if code == 1205:  # lock wait timeout
                    cause = TargetError(f"MLflow's tables in {self.target.display} stayed in use for "
                                        f"{PROMOTE_LOCK_TIMEOUT} s (a running mlflow server?)")
                elif code == 1050:
                    cause = TargetError(f"{self.target.display} gained MLflow tables during the run ({first_line(e)})")
                else:
                    cause = TargetError(f"the server refused the promotion into {self.target.display}: {first_line(e)} "
                                        "(etl-migrate needs ALTER, CREATE, DROP, INSERT and TRIGGER on it)")
                self._keep_aside(staged)
                raise NotPromoted(cause, self.target.display, self.kept, verified) from None
            raise MigrationError(f"promotion into {self.target.display} failed, nothing was changed: "
                                 f"{first_line(e)}") from None
        hold_for_test(HOLD_AFTER_RENAME)
        # A row written after the check and before the rename is in the tables that came out.
        gained = filled_tables(conn, [(db, name, name[len(OLD_PREFIX):]) for _, _, db, name in out])
        if gained:
            _rename(conn, [(database, t, staging, t) for t in staged] + [(c, d, a, b) for a, b, c, d in out])
            self._keep_aside(staged)
            shown = ", ".join(f"{t}: {n} rows" for t, n in sorted(gained.items())[:5])
            raise NotPromoted(TargetError(f"{self.target.display} gained MLflow data during the run ({shown})"),
                              self.target.display, self.kept, verified)
        # Promoted. Should what follows fail, the staging database stays: the next run finishes it.
        self._renamed = True
        try:
            complete_promotion(conn, database, staging, _run_rows(conn, staging))
        except pymysql.Error as e:
            raise MigrationError(
                f"the migrated database is in {self.target.display}, but finishing the promotion failed "
                f"({first_line(e)}): its trigger(s) are not made yet. The next etl-migrate run into "
                f"{self.target.display} finishes it (it reads what to do from database {staging})") from None
        self.promoted = True

    def _keep_aside(self, staged: list[str]) -> None:
        """Move the staged tables into a database of their own that no later run removes, with
        their triggers; the error names it."""
        conn = self._conn
        kept = self.name.replace(STAGING_PREFIX, KEPT_PREFIX, 1)
        charset, collation = database_defaults(conn, self.name)
        recorded = [r for r in _run_rows(conn, self.name) if r[0] == "trigger"]
        for trigger in triggers(conn, self.name):  # not taken off yet: they cannot move either
            recorded.append(("trigger", trigger.name, f"{trigger.table}\n{trigger.sql_mode}\n{trigger.statement}"))
            with conn.cursor() as cur:
                cur.execute(f"DROP TRIGGER {quote(self.name)}.{quote(trigger.name)}")
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {quote(kept)} CHARACTER SET {charset} COLLATE {collation}")
        _rename(conn, [(self.name, t, kept, t) for t in staged])
        for _, name, detail in recorded:
            table, sql_mode, statement = detail.split("\n", 2)
            create_trigger(conn, kept, Trigger(name, table, sql_mode, statement))
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE {quote(self.name)}")
        self.kept_aside = True
        self.kept = f"database {kept} of {self.target.display.rsplit('/', 1)[0]}"
