"""The PostgreSQL target: MLflow's tables in one schema of a database, staged in a schema of
their own and moved in by one transaction.

    target schema      public, or the first schema of the search_path the URI's options name:
                       where MLflow itself would find its tables (current_schema())
    staging schema     etl_migrate_staging_<pid>_<time>, in the same database: MLflow's schema
                       made by its own migrations (their SQL recorded once and replayed after:
                       schema.py), loaded with binary COPY, verified, then moved
    advisory locks     one per target schema keeps two runs apart; one per staging schema
                       tells a live run's staging from one a killed run left (the server drops
                       a dead session's locks), which the next run removes

Promotion is one transaction (PostgreSQL DDL is transactional): lock the target's MLflow tables,
re-check that they hold no data, drop them, ``ALTER ... SET SCHEMA`` every staged table (its
indexes, constraints, triggers and owned sequences go with it) and function, drop the empty
staging schema. A kill at any point rolls it back whole.

Passwords come from the URI, PGPASSWORD or ~/.pgpass (libpq reads both); none is ever printed.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from contextlib import suppress

from etl.errors import MigrationError, NotPromoted, TargetError, TargetHoldsData
from etl.observe import log
from etl.rows import COLUMNS, TABLES
from etl.sink.postgres.writer import PostgresWriter, _psycopg, first_line
# MLflow's declared column types are read off its migrations' SQLite build: the same declarations
# on every database.
from etl.sink.sqlite.schema import declared_types, schema_limits
from etl.sink.target import (
    SAMPLE_EXPERIMENT_NAMES,
    SAMPLE_RUN_IDS,
    SCHEMA_SEED_TABLES,
    check_column_lists,
    redact,
    sample_query,
    shown_data,
)
from etl.sql_limits import INT16, INT32, INT64, ColumnLimit, Limits

# PostgreSQL's INTEGER, the type of MLflow's experiment_id.
PG_INTEGER_MAX = 2**31 - 1
INT_RANGES = {"smallint": INT16, "integer": INT32, "bigint": INT64}
# First key of every advisory lock etl-migrate takes ('etlm'); the second is hashtext(name).
LOCK_CLASS = 0x65746C6D
STAGING_PREFIX = "etl_migrate_staging_"
# A verified database the target could not take (it gained data during the run) is kept under
# this prefix, which stale-staging removal leaves alone.
KEPT_PREFIX = "etl_migrate_kept_"
# How long promotion waits for MLflow's tables in the target (a server's open transactions).
PROMOTE_LOCK_TIMEOUT = "30s"
DRIVERS = ("postgresql", "postgres", "postgresql+psycopg")


class PostgresTarget:
    max_experiment_id = PG_INTEGER_MAX

    def __init__(self, uri: str):
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(uri)
        except (ArgumentError, ValueError) as e:
            raise TargetError(f"target {redact(uri)!r} is not a valid PostgreSQL URI ({e})") from None
        if url.drivername not in DRIVERS:
            raise TargetError(
                f"target driver {url.drivername!r} is not supported; use postgresql:// or "
                "postgresql+psycopg:// (etl-migrate connects with psycopg 3)"
            )
        if not url.database:
            raise TargetError(f"target {redact(uri)!r} names no database (postgresql://user@host:5432/DATABASE)")
        self.url = url.set(drivername="postgresql+psycopg")
        self.display = redact(uri)
        # MLflow's plain postgresql:// needs psycopg2; psycopg 3 came with etl-migrate, and a
        # server in an environment of its own gets it beside MLflow.
        self.server_uri = "postgresql+psycopg://" + self.display.split("://", 1)[1]
        self.server_packages = ("psycopg[binary]",)
        self._schema: str | None = None

    # --- connections -----------------------------------------------------------------------

    def url_for(self, search_path: str | None = None, read_only: bool = False):
        """The target's URL, optionally with another search_path (a staging schema)."""
        extra = []
        if search_path is not None:
            extra.append(f"-csearch_path={search_path}")
        if read_only:
            extra.append("-cdefault_transaction_read_only=on")
        if not extra:
            return self.url
        options = " ".join(filter(None, [self.url.query.get("options"), *extra]))
        return self.url.update_query_dict({"options": options})

    def connect_args(self, search_path: str | None = None) -> tuple[str, dict]:
        """(libpq URI, keywords) for psycopg.connect. The query parameters (options=...) go as
        keywords: libpq would read the "+" SQLAlchemy renders for a space as a plus sign."""
        url = self.url_for(search_path)
        base = url.set(drivername="postgresql", query={}).render_as_string(hide_password=False)
        return base, dict(url.query)

    def connect(self, search_path: str | None = None, autocommit: bool = True):
        psycopg = _psycopg()
        base, keywords = self.connect_args(search_path)
        try:
            return psycopg.connect(base, autocommit=autocommit, application_name="etl-migrate",
                                   connect_timeout=15, **keywords)
        except psycopg.OperationalError as e:
            raise TargetError(f"cannot connect to PostgreSQL target {self.display}: {first_line(e)}") from None

    def locator(self, search_path: str | None = None) -> str:
        """What the verifier and counts() connect to (etl.verify.connect), read-only."""
        return self.url_for(search_path, read_only=True).render_as_string(hide_password=False)

    @property
    def schema(self) -> str:
        """The schema MLflow would use with this URI: the first existing one of its search_path."""
        if self._schema is None:
            with self.connect() as conn:
                self._schema = self._current_schema(conn)
        return self._schema

    def _current_schema(self, conn) -> str:
        schema = conn.execute("SELECT current_schema()").fetchone()[0]
        if schema is None:
            path = conn.execute("SHOW search_path").fetchone()[0]
            raise TargetError(
                f"no schema of the target's search_path ({path}) exists in {self.display}; "
                "create it first (CREATE SCHEMA ...)"
            )
        return schema

    # --- checks ----------------------------------------------------------------------------

    def check_free(self) -> None:
        """Reachable, allowed to create what a run creates, and holding no MLflow data."""
        with self.connect() as conn:
            self._schema = self._current_schema(conn)
            check_privileges(conn, self._schema)
            refuse_if_filled(conn, self._schema, self.display)

    @staticmethod
    def expected_limits() -> Limits:
        """For a dry run, which stages nothing: the limits a staged schema would have (see
        ``PostgresStaging.column_limits``), from the types MLflow's migrations declare, as the
        SQLite template keeps them (VARCHAR(n), SMALLINT, INTEGER, BIGINT, TEXT), read with
        PostgreSQL's meaning. A test holds the two equal."""
        limits = dict(schema_limits())
        for key, declared in declared_types().items():
            if key in limits:
                match = _DECLARED.fullmatch(declared.strip().lower())
                data_type, length = (match[1], int(match[2]) if match[2] else None) if match else (declared, None)
                limits[key] = _postgres_limit(limits[key], key[1], _PG_NAMES.get(data_type, data_type), length)
        return limits

    @staticmethod
    def expected_folding() -> None:
        """Keys compare byte by byte here (see etl.keys)."""
        return None

    def staging(self, keep_failed: bool = False) -> PostgresStaging:
        return PostgresStaging(self, keep_failed)

    def staging_glob(self) -> str:
        # A staging schema left by a killed run is removed by the next run: no files to remove.
        return ""

    def existing(self) -> str:
        with self.connect() as conn:
            schema = self._current_schema(conn)
            tables = set(schema_tables(conn, schema))
        missing = {"alembic_version", "experiments", "runs"} - tables
        if missing:
            raise TargetError(
                f"target {self.display} (schema {schema}) is not an MLflow database "
                f"(no {', '.join(sorted(missing))} table)"
            )
        return self.locator(schema)

    @staticmethod
    def counts(locator: str) -> dict[str, int]:
        from etl.verify.connect import connect

        conn = connect(locator)
        try:
            return {t: conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in TABLES}
        finally:
            conn.close()


# A type as MLflow's migrations declare it, and its name in information_schema.
_DECLARED = re.compile(r"(\w+(?: \w+)*)\s*(?:\((\d+)\))?")
_PG_NAMES = {"varchar": "character varying", "char": "character", "int": "integer"}


def _postgres_limit(limit: ColumnLimit, column: str, data_type: str, length: int | None) -> ColumnLimit:
    """What PostgreSQL adds to a column's limit: text has a length (or none) and holds no NUL,
    integers have their declared width. experiment_id keeps the 64-bit range: ids beyond 32 bits
    are renumbered (etl.source.merge.renumber), never refused."""
    if data_type in ("character varying", "character", "text"):
        return dataclasses.replace(limit, max_length=length, nul_allowed=False)
    if data_type in INT_RANGES and column != "experiment_id":
        return dataclasses.replace(limit, int_range=INT_RANGES[data_type])
    return limit


def schema_tables(conn, schema: str) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY c.relname", (schema,)
    )]


def check_privileges(conn, schema: str) -> None:
    """What a run needs, checked before it creates anything: CREATE on the database (the staging
    schema), CREATE on the target schema (tables move in), ownership of MLflow's tables there
    (they are dropped when empty)."""
    user, database, on_db, on_schema = conn.execute(
        "SELECT current_user, current_database(), has_database_privilege(current_database(), 'CREATE'), "
        "has_schema_privilege(%s, 'CREATE')", (schema,)
    ).fetchone()
    if not on_db:
        raise TargetError(
            f"role {user!r} may not create schemas in database {database!r} (etl-migrate stages "
            f"the migration in a schema of its own): GRANT CREATE ON DATABASE \"{database}\" TO \"{user}\""
        )
    if not on_schema:
        raise TargetError(
            f"role {user!r} may not create tables in schema {schema!r} of database {database!r}: "
            f"GRANT CREATE ON SCHEMA \"{schema}\" TO \"{user}\""
        )
    foreign = [r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind = 'r' AND c.relname = ANY(%s) "
        "AND NOT pg_has_role(c.relowner, 'USAGE') ORDER BY 1", (schema, list(TABLES))
    )]
    if foreign:
        raise TargetError(
            f"MLflow's tables in schema {schema!r} of database {database!r} belong to another role "
            f"({', '.join(foreign[:3])}...); run etl-migrate as their owner"
        )


def filled_tables(conn, schema: str, tables) -> dict[str, int]:
    """Tables of the target schema that hold data: rows beyond what MLflow's own initialization
    writes (the alembic stamp, the default workspace, the Default experiment alone)."""
    from psycopg import sql

    filled = {}
    for table in tables:
        if table in SCHEMA_SEED_TABLES:
            continue
        query = sql.SQL("SELECT COUNT(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        if table == "experiments":
            query += sql.SQL(" WHERE NOT (experiment_id = 0 AND name = 'Default')")
        count = conn.execute(query).fetchone()[0]
        if count:
            filled[table] = count
    return filled


def refuse_if_filled(conn, schema: str, display: str) -> None:
    present = [t for t in schema_tables(conn, schema) if t in COLUMNS or t == "experiments"]
    filled = filled_tables(conn, schema, present)
    if filled:
        from psycopg import sql

        def count(table: str, where: str | None) -> int:
            if table not in present:
                return 0
            query = sql.SQL("SELECT COUNT(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
            return conn.execute(query + sql.SQL(f" WHERE {where}" if where else "")).fetchone()[0]

        def sample(what: tuple[str, str, str]) -> set:
            table = what[1]
            if table not in present:
                return set()
            return {r[0] for r in conn.execute(sample_query(what, sql.Identifier(schema, table).as_string(conn)))}

        raise TargetHoldsData(f"{display} (schema {schema})", shown_data(count, filled), sample(SAMPLE_RUN_IDS),
                              sample(SAMPLE_EXPERIMENT_NAMES), hint="Choose another database or schema.")


def _lock_key(conn, name: str) -> tuple[int, int]:
    return LOCK_CLASS, conn.execute("SELECT hashtext(%s)", (name,)).fetchone()[0]


def _try_lock(conn, name: str) -> bool:
    return conn.execute("SELECT pg_try_advisory_lock(%s, %s)", _lock_key(conn, name)).fetchone()[0]


class PostgresStaging:
    """The staging schema: created under the target's advisory lock, dropped unless promoted."""

    def __init__(self, target: PostgresTarget, keep_failed: bool):
        self.target = target
        self.keep_failed = keep_failed
        self.name = f"{STAGING_PREFIX}{os.getpid()}_{int(time.time())}"
        self.locator = target.locator(self.name)
        self.kept = f"schema {self.name} of {target.display}"
        self.promoted = False
        self.kept_aside = False
        self._conn = None
        self._foreign_keys: list[tuple[str, str, str]] = []

    def __enter__(self) -> PostgresStaging:
        from psycopg import sql

        conn = self._conn = self.target.connect()
        try:
            schema = self.target.schema
            if not _try_lock(conn, f"target:{schema}"):
                raise TargetError(
                    f"another etl-migrate is migrating into schema {schema!r} of {self.target.display}; "
                    "wait for it to finish"
                )
            refuse_if_filled(conn, schema, self.target.display)  # again, now that we hold the lock
            self._remove_stale()
            _try_lock(conn, f"staging:{self.name}")
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.name)))
            conn.execute(sql.SQL("COMMENT ON SCHEMA {} IS {}").format(
                sql.Identifier(self.name),
                sql.Literal(f"etl-migrate staging for schema {schema}; removed when the run ends "
                            "(or by the next run, if this one was killed)"),
            ))
        except BaseException:
            self._close()
            raise
        return self

    def _remove_stale(self) -> None:
        from psycopg import sql

        conn = self._conn
        stale = [r[0] for r in conn.execute(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", (STAGING_PREFIX,)
        )]
        for name in stale:
            # A live run holds its staging schema's lock; a killed run's session is gone.
            if _try_lock(conn, f"staging:{name}"):
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", _lock_key(conn, f"staging:{name}"))

    def __exit__(self, exc_type, exc, tb) -> None:
        from etl.errors import VerificationFailed

        kept = self.keep_failed and exc_type is not None and issubclass(exc_type, VerificationFailed)
        try:
            if not (self.promoted or kept or self.kept_aside) and self._conn is not None:
                from psycopg import sql

                with suppress(Exception):  # the server may be gone; the next run cleans up
                    if self._conn.info.transaction_status != 0:  # not idle: end what failed
                        self._conn.rollback()
                    self._conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.name)))
        finally:
            self._close()

    def _close(self) -> None:
        if self._conn is not None:
            with suppress(Exception):
                self._conn.close()
            self._conn = None

    # --- schema ----------------------------------------------------------------------------

    def create_schema(self) -> None:
        """MLflow's schema by MLflow's own migrations (or their recorded SQL replayed, see
        ``etl.sink.postgres.schema``) in the staging schema; then the foreign keys come off for the load
        (see ``writer``)."""
        from etl.sink.postgres.schema import create_schema

        how = create_schema(self.target, self.name)
        log.info("schema created", schema=self.name, how=how)
        with self.target.connect(self.name) as conn:
            check_column_lists(lambda table: self._staged_columns(conn, table))
            if conn.execute("SELECT COUNT(*) FROM alembic_version").fetchone()[0] != 1:
                raise MigrationError("MLflow's migrations left no alembic version in the staging schema")
            self._foreign_keys = [tuple(r) for r in conn.execute(
                "SELECT t.relname, c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c "
                "JOIN pg_class t ON t.oid = c.conrelid "
                "WHERE c.connamespace = %s::regnamespace AND c.contype = 'f' ORDER BY 1, 2",
                (self.name,),
            )]
            self._drop_foreign_keys(conn)

    def _staged_columns(self, conn, table: str) -> list[tuple[str, bool, bool]]:
        return [(r[0], r[1] == "NO", r[2] is not None) for r in conn.execute(
            "SELECT column_name, is_nullable, column_default FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position", (self.name, table)
        )]

    def _drop_foreign_keys(self, conn) -> None:
        """Batches arrive in any order (a run's before its experiment's), and with --skip-invalid
        rows of left-out entities are pruned after the load: the keys are re-made, and so
        checked, by the writer's finish()."""
        from psycopg import sql

        with conn.transaction():
            for table, name, _ in self._foreign_keys:
                conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                    sql.Identifier(table), sql.Identifier(name)))

    def column_limits(self) -> Limits:
        """MLflow's constraints (types, NOT NULL, CHECK ... IN, as for SQLite) with what
        PostgreSQL adds (``_postgres_limit``), read from the staged schema."""
        limits = dict(schema_limits())
        with self.target.connect(self.name) as conn:
            for table, column, data_type, length in conn.execute(
                "SELECT table_name, column_name, data_type, character_maximum_length "
                "FROM information_schema.columns WHERE table_schema = %s AND table_name = ANY(%s)",
                (self.name, list(COLUMNS)),
            ):
                limit = limits.get((table, column))
                if limit is not None:
                    limits[(table, column)] = _postgres_limit(limit, column, data_type, length)
        return limits

    @staticmethod
    def key_folding() -> None:
        """Keys compare byte by byte here (see etl.keys)."""
        return None

    def writer(self, batch_size: int) -> PostgresWriter:
        return PostgresWriter(self.target.connect_args(self.name), batch_size, self._foreign_keys)

    # --- promotion -------------------------------------------------------------------------

    def promote(self, verified: bool = True) -> None:
        """One transaction: lock, re-check, drop MLflow's empty tables, move the staged ones in.
        A target that gained data or stays locked is not touched, and the staged database is
        kept (renamed so no later run removes it as stale) and named in the error."""
        from psycopg import errors, sql

        conn, target, staging = self._conn, self.target.schema, self.name
        staged = schema_tables(conn, staging)
        try:
            with conn.transaction():
                conn.execute(f"SET LOCAL lock_timeout = '{PROMOTE_LOCK_TIMEOUT}'")
                existing = [t for t in schema_tables(conn, target) if t in staged]
                names = sql.SQL(", ").join(sql.Identifier(target, t) for t in existing)
                if existing:
                    # No MLflow writer can pass this lock between the check and the move.
                    conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(names))
                refuse_if_filled(conn, target, self.target.display)
                if existing:
                    conn.execute(sql.SQL("DROP TABLE {}").format(names))
                for name, args in conn.execute(
                    "SELECT proname, pg_get_function_identity_arguments(oid) FROM pg_proc "
                    "WHERE pronamespace = %s::regnamespace", (staging,)
                ).fetchall():
                    conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}({})").format(
                        sql.Identifier(target, name), sql.SQL(args)))
                    conn.execute(sql.SQL("ALTER FUNCTION {}({}) SET SCHEMA {}").format(
                        sql.Identifier(staging, name), sql.SQL(args), sql.Identifier(target)))
                for table in staged:  # indexes, constraints, triggers, owned sequences go along
                    conn.execute(sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
                        sql.Identifier(staging, table), sql.Identifier(target)))
                # RESTRICT: anything MLflow's migrations made that did not move stops the promotion.
                conn.execute(sql.SQL("DROP SCHEMA {}").format(sql.Identifier(staging)))
        except (TargetError, errors.LockNotAvailable) as e:
            if isinstance(e, errors.LockNotAvailable):
                e = TargetError(f"MLflow's tables in schema {target!r} of {self.target.display} "
                                f"stayed in use for {PROMOTE_LOCK_TIMEOUT} (a running mlflow server?)")
            kept = staging.replace(STAGING_PREFIX, KEPT_PREFIX, 1)
            conn.execute(sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(sql.Identifier(staging), sql.Identifier(kept)))
            self.kept_aside = True
            raise NotPromoted(e, f"schema {target!r}", f"schema {kept!r} of {self.target.display}", verified) from None
        except _psycopg().Error as e:
            raise MigrationError(f"promotion into schema {target!r} failed, nothing was changed: {first_line(e)}") from None
        self.promoted = True
