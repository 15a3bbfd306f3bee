"""The PostgreSQL target's single writer: binary COPY per table per batch into the staging schema,
the indexes built once after the load."""

from __future__ import annotations

import re
import threading
from contextlib import suppress

from etl.errors import MigrationError
from etl.rows import COLUMNS, DEDUPLICATED_TABLES, DICT_TABLES, TABLES, RowBatch
from etl.sink.target import (
    ENTITY_KEYS,
    MISSING_DATASET_INPUTS,
    MISSING_RUN_MODEL_METRICS,
    UNKEYED_ORPHANS,
    dict_row_groups,
    exclusive,
    first_of_each_key,
    redact,
)


def _psycopg():
    import psycopg

    return psycopg


def first_line(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return redact(text.splitlines()[0])


# Column types COPY sends in PostgreSQL's binary format: numbers go as machine values, so the
# server parses none from text (a tenth to a fifth less writer time, bench/writer_speed.py).
# A table with any other type (a json column a later MLflow adds, say) is sent as text, which
# the server parses as it would any literal.
BINARY_COPY_TYPES = frozenset({"varchar", "text", "bpchar", "int2", "int4", "int8", "float4", "float8", "bool"})


class PostgresWriter:
    """The single writer: COPY per table per batch into the staging schema, one transaction per
    ``batch_size`` rows. The foreign keys (see ``PostgresStaging._drop_foreign_keys``) and most
    indexes (``_drop_indexes``) are off during the load and re-made, which checks every row, by
    finish()."""

    def __init__(self, connect_args: tuple[str, dict], batch_size: int, foreign_keys: list[tuple[str, str, str]]):
        psycopg = _psycopg()
        self.batch_size = batch_size
        self.foreign_keys = foreign_keys
        base, keywords = connect_args
        self.conn = psycopg.connect(base, application_name="etl-migrate writer", **keywords)
        self._lock = threading.Lock()
        self._pending = 0
        # table -> column -> type name (udt_name: varchar, int8, ...)
        self._types: dict[str, dict[str, str]] = {}
        for table, column, type_name in self.conn.execute(
            "SELECT table_name, column_name, udt_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() ORDER BY ordinal_position"
        ):
            self._types.setdefault(table, {})[column] = type_name
        self._staged = {t: set(c) for t, c in self._types.items()}
        # Where the primary key sits in our tuples, for the tables whose repeats are dropped.
        self._keys = {table: self._primary_key(table) for table in DEDUPLICATED_TABLES}
        self._indexes = self._drop_indexes()
        self.conn.commit()

    def _drop_indexes(self) -> list[str]:
        """Take the indexes off for the load (primary keys and unique constraints with theirs);
        return the statements that re-make them, in finish().

        Keeping MLflow's B-trees up to date row by row (three on metrics, each led by a text
        column) was most of the server's work during the load; building each once, from a sort,
        costs less, and checks every unique key all the same. Only on tables the load fills,
        and not the primary keys of the tables delete_entities deletes from by id."""
        from psycopg import sql

        by_id = {table for _, table, _ in ENTITY_KEYS}
        remake = []
        for table, index, primary, constraint, definition in self.conn.execute(
            "SELECT t.relname, i.relname, x.indisprimary, c.conname, "
            "COALESCE(pg_get_constraintdef(c.oid), pg_get_indexdef(x.indexrelid)) FROM pg_index x "
            "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
            "LEFT JOIN pg_constraint c ON c.conindid = x.indexrelid AND c.conrelid = x.indrelid "
            "AND c.contype IN ('p', 'u', 'x') "
            "WHERE t.relnamespace = current_schema()::regnamespace ORDER BY 1, 2"
        ).fetchall():
            if table not in COLUMNS or (primary and table in by_id):
                continue
            if constraint is not None:
                self.conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                    sql.Identifier(table), sql.Identifier(constraint)))
                remake.append(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                    sql.Identifier(table), sql.Identifier(constraint), sql.SQL(definition)))
            else:
                self.conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(index)))
                remake.append(sql.SQL(definition))
        return remake

    def _primary_key(self, table: str) -> tuple[int, ...]:
        columns = [r[0] for r in self.conn.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary",
            (table,),
        )]
        return tuple(COLUMNS[table].index(c) for c in columns)

    def _copy(self, table: str, columns, rows) -> None:
        quoted = ", ".join(f'"{c}"' for c in columns)
        types = [self._types[table][c] for c in columns]
        binary = all(t in BINARY_COPY_TYPES for t in types)
        statement = f'COPY "{table}" ({quoted}) FROM STDIN' + (" (FORMAT BINARY)" if binary else "")
        with self.conn.cursor() as cur, cur.copy(statement) as copy:
            if binary:
                copy.set_types(types)
            for row in rows:
                copy.write_row(row)

    @exclusive
    def write(self, batch: RowBatch) -> None:
        psycopg = _psycopg()
        try:
            for table in TABLES:
                rows = batch.rows.get(table)
                if not rows:
                    continue
                if table in DICT_TABLES:
                    self._write_dicts(table, rows)
                else:
                    self._copy(table, COLUMNS[table], first_of_each_key(table, rows, self._keys[table])
                               if table in self._keys else rows)
                self._pending += len(rows)
        except psycopg.errors.UniqueViolation as e:
            # Every constraint of the target is checked as input first (etl.sql_limits, the clash
            # checks in the pipeline): reaching this is a bug, and says so.
            raise MigrationError(f"a row broke a constraint the input checks missed (a bug): {first_line(e)}") from None
        except psycopg.Error as e:
            raise MigrationError(f"writing the staging schema failed: {first_line(e)}") from None
        if self._pending >= self.batch_size:
            self.commit()

    def _write_dicts(self, table: str, rows: list[dict]) -> None:
        for columns, tuples in dict_row_groups(table, rows, self._staged[table]):
            self._copy(table, columns, tuples)

    def commit(self) -> None:
        self.conn.commit()
        self._pending = 0

    @exclusive
    def delete_entities(self, ids: dict[str, set]) -> None:
        """Delete entities by id (kind -> ids); prune_orphans then removes what hung from them."""
        self.commit()
        with self.conn.cursor() as cur:
            for kind, table, key in ENTITY_KEYS:
                cur.executemany(f'DELETE FROM "{table}" WHERE "{key}" = %s', [(i,) for i in ids.get(kind, ())])
        self.commit()

    @exclusive
    def inputs_of_missing_datasets(self) -> list[tuple[str, str, int]]:
        self.commit()
        return self.conn.execute(MISSING_DATASET_INPUTS).fetchall()

    @exclusive
    def model_metrics_of_missing_runs(self) -> list[tuple[str, int, str, str]]:
        self.commit()
        return self.conn.execute(MISSING_RUN_MODEL_METRICS).fetchall()

    @exclusive
    def prune_orphans(self) -> dict[str, int]:
        """Delete rows whose parent entity was left out (--skip-invalid); rows deleted per table.

        The foreign keys the staged schema declares find most of them, repeated until nothing
        changes (a run's metrics go once the run has gone); run inputs, which have no key, are
        matched by run id as in the SQLite writer."""
        self.commit()
        dropped: dict[str, int] = {}
        checks = [_orphan_delete(table, definition) for table, _, definition in self.foreign_keys]
        changed = True
        while changed:
            changed = False
            for table, statement in checks:
                count = self.conn.execute(statement).rowcount
                if count:
                    dropped[table] = dropped.get(table, 0) + count
                    changed = True
        for table, statement in UNKEYED_ORPHANS:
            count = self.conn.execute(statement).rowcount
            if count:
                dropped[table] = dropped.get(table, 0) + count
        self.commit()
        return dropped

    @exclusive
    def finish(self) -> None:
        """Re-make the indexes and unique keys, then the foreign keys (each checks every row),
        move the id sequences past the largest ids, commit, close."""
        from psycopg import sql

        psycopg = _psycopg()
        self.commit()
        try:
            for statement in self._indexes:
                self.conn.execute(statement)
        except psycopg.errors.UniqueViolation as e:
            raise MigrationError(f"a row broke a constraint the input checks missed (a bug): {first_line(e)}") from None
        try:
            for table, name, definition in self.foreign_keys:
                self.conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                    sql.Identifier(table), sql.Identifier(name), sql.SQL(definition)))
        except psycopg.errors.ForeignKeyViolation as e:
            raise MigrationError(f"rows refer to entities that were not migrated: {first_line(e)}") from None
        for table, column in self.conn.execute(
            "SELECT t.relname, a.attname FROM pg_depend d "
            "JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
            "JOIN pg_class t ON t.oid = d.refobjid "
            "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid "
            "WHERE s.relnamespace = current_schema()::regnamespace AND d.deptype IN ('a', 'i')"
        ).fetchall():
            # MLflow creates experiments through the sequence afterwards: start past ours.
            self.conn.execute(sql.SQL(
                "SELECT setval(pg_get_serial_sequence({t}, {c}), COALESCE(MAX({col}), 0) + 1, false) FROM {tab}"
            ).format(t=sql.Literal(f'"{table}"'), c=sql.Literal(column), col=sql.Identifier(column),
                     tab=sql.Identifier(table)))
        self.commit()
        self.conn.close()

    def abort(self) -> None:
        """Cancel the statement in flight (from another thread), then close the connection."""
        with suppress(Exception):
            self.conn.cancel_safe(timeout=10)
        if not self._lock.acquire(timeout=60):
            return
        try:
            with suppress(Exception):
                self.conn.close()
        finally:
            self._lock.release()


def _orphan_delete(table: str, definition: str) -> tuple[str, str]:
    """DELETE of the rows of table that break a ``FOREIGN KEY (a, b) REFERENCES p(x, y)``."""
    match = re.match(r"FOREIGN KEY \((.+?)\) REFERENCES (.+?)\((.+?)\)", definition)
    if match is None:  # pragma: no cover - pg_get_constraintdef's format is fixed
        raise MigrationError(f"cannot read foreign key {definition!r}")
    cols = [c.strip() for c in match.group(1).split(",")]
    parent = match.group(2)
    parent_cols = [c.strip() for c in match.group(3).split(",")]
    present = " AND ".join(f"c.{c} IS NOT NULL" for c in cols)
    joined = " AND ".join(f"p.{pc} = c.{c}" for c, pc in zip(cols, parent_cols))
    return table, (f'DELETE FROM "{table}" c WHERE {present} AND NOT EXISTS '
                   f"(SELECT 1 FROM {parent} p WHERE {joined})")
