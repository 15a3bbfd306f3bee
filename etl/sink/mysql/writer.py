"""The MySQL target's single writer: rows go into the staging database by LOAD DATA LOCAL INFILE
where the server allows it, else by multi-row INSERTs of bounded size; foreign keys and secondary
indexes come off for the load and are made again, once, at its end.

    LOAD DATA LOCAL   each table's rows of a batch as one CSV file, sent once: the server parses
                      no SQL per row (bench/writer_speed.py measures both ways). A LOCAL load turns
                      errors into warnings and skips duplicate keys, so every load is checked: the
                      rows it reports are the rows sent, and it raised no warning.
    INSERT            when the server's local_infile is off (MySQL 8's default): PyMySQL's
                      executemany sends one INSERT per up to STATEMENT_BYTES of rows.

The session is strict (STRICT_ALL_TABLES: a value that does not fit is an error, not a silent
truncation), and NO_AUTO_VALUE_ON_ZERO lets experiment 0 keep its id (MySQL reads an explicit 0 in
an AUTO_INCREMENT column as "the next id" otherwise). Everything a value could break was checked as
input before (etl.sql_limits, etl.keys): an error here is reported as one the checks missed.

Keys are compared byte for byte (BINARY) wherever the writer deletes or finds orphans: the
staged tables compare by their collation, and a run left out as ``ABC`` must not take ``abc``'s
rows with it, nor keep its own under ``abc``.
"""

from __future__ import annotations

import csv
import os
import re
import tempfile
import threading
from contextlib import suppress

from etl.errors import MigrationError
from etl.rows import COLUMNS, DEDUPLICATED_TABLES, DICT_TABLES, TABLES, RowBatch
from etl.sink.mysql.schema import quote
from etl.sink.mysql.staging import error_code, first_line
from etl.sink.target import (
    ENTITY_KEYS,
    MISSING_DATASET_INPUTS,
    MISSING_RUN_MODEL_METRICS,
    dict_row_groups,
    exclusive,
    first_of_each_key,
)

# Bytes of one multi-row INSERT at most (and at most half the server's max_allowed_packet).
STATEMENT_BYTES = 4 * 2**20
SESSION_MODE = "STRICT_ALL_TABLES,NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION,ERROR_FOR_DIVISION_BY_ZERO"
DUPLICATE_KEY = 1062

# LOAD DATA's file: rows of the batch in flight (param and tag values among them), mode 0600 in
# the temporary folder, removed by close(). A run killed with -9 cannot remove it: the file is
# named with the run's process id, and a later run removes those of processes that are gone.
LOAD_FILE_PREFIX = "etl-migrate-load-"
LOAD_FILE = re.compile(re.escape(LOAD_FILE_PREFIX) + r"(\d+)-\w+\.csv")


def remove_load_files_of_dead_runs() -> None:
    if os.name != "posix":
        return  # no signal 0 to ask whether a process lives (os.kill would end it on Windows)
    folder = tempfile.gettempdir()
    with suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            found = LOAD_FILE.fullmatch(entry.name)
            if found and not process_lives(int(found.group(1))):
                with suppress(OSError):  # another run's clean-up got there first
                    os.unlink(entry.path)


def process_lives(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's (its file is not ours to remove), or no pid at all
    return True


class _Null(int):
    """What the CSV file holds for NULL: the bare word NULL, which LOAD DATA reads as NULL when
    fields may be enclosed in quotes (every string is). An int, so the csv module leaves it
    unquoted; never equal to a value the rows hold (they hold no _Null)."""

    def __str__(self) -> str:
        return "NULL"

    __repr__ = __str__


NULL = _Null(0)


def _loadable(row):
    """A row as the CSV file needs it: None as NULL, booleans as 0/1 (csv writes True)."""
    return [NULL if v is None else int(v) if v is True or v is False else v for v in row]


class MysqlWriter:
    """The single writer: per table per batch one LOAD DATA (or bounded INSERTs) into the staging
    database, one transaction per ``batch_size`` rows. Foreign keys and secondary indexes are off
    during the load (see ``_take_off``); finish() makes them again and checks every reference."""

    def __init__(self, connect, batch_size: int, method: str | None = None, rebuild_indexes: bool = True):
        """``method``: "load" or "insert" (default: "load" where the server allows it);
        ``rebuild_indexes``: take the foreign keys and secondary indexes off for the load (the
        default; bench/writer_speed.py measures both ways)."""
        import pymysql

        self.batch_size = batch_size
        self._connect = connect
        probe = connect()
        try:
            local_infile, packet = _query(probe, "SELECT @@GLOBAL.local_infile, @@max_allowed_packet")
        finally:
            probe.close()
        # LOAD DATA LOCAL needs the server's consent (local_infile: on in MariaDB, off in MySQL 8).
        self.method = method or ("load" if local_infile else "insert")
        self.conn = connect(local_infile=self.method == "load")
        self._lock = threading.Lock()
        self._pending = 0
        self._statement_bytes = min(STATEMENT_BYTES, int(packet) // 2)
        with self.conn.cursor() as cur:
            cur.execute("SET SESSION sql_mode = %s", (SESSION_MODE,))
            cur.execute("SET SESSION foreign_key_checks = 0")
            cur.execute("SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS "
                        "WHERE TABLE_SCHEMA = DATABASE() ORDER BY ORDINAL_POSITION")
            self._staged: dict[str, set[str]] = {}
            for table, column in cur.fetchall():
                self._staged.setdefault(table, set()).add(column)
        self._keys = {table: self._primary_key(table) for table in DEDUPLICATED_TABLES}
        self._rebuild = rebuild_indexes
        self.foreign_keys, self._indexes = self._take_off(rebuild_indexes)
        self.conn.commit()
        remove_load_files_of_dead_runs()
        fd, self._file = tempfile.mkstemp(prefix=f"{LOAD_FILE_PREFIX}{os.getpid()}-", suffix=".csv")
        os.close(fd)
        self._errors = (pymysql.Error,)

    def _primary_key(self, table: str) -> tuple[int, ...]:
        with self.conn.cursor() as cur:
            cur.execute("SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() "
                        "AND TABLE_NAME = %s AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX", (table,))
            return tuple(COLUMNS[table].index(r[0]) for r in cur.fetchall())

    def _take_off(self, drop: bool) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
        """Drop (unless not ``drop``) the foreign keys and the secondary (non-unique) indexes of
        the tables the load fills; return the clauses that make them again: [(table, name,
        FOREIGN KEY ...)] and [(table, ADD INDEX ...)] (the latter empty when nothing was dropped).

        Batches arrive in any order (a run's before its experiment's) and, with --skip-invalid,
        rows of left-out entities are pruned after the load: the keys are made again, and every
        reference checked, by finish(). Keeping MLflow's secondary B-trees up to date row by row
        costs more than building each once from a sort (bench/writer_speed.py)."""
        foreign, indexes = [], []
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT r.TABLE_NAME, r.CONSTRAINT_NAME, r.REFERENCED_TABLE_NAME, r.UPDATE_RULE, r.DELETE_RULE, "
                "GROUP_CONCAT(k.COLUMN_NAME ORDER BY k.ORDINAL_POSITION SEPARATOR '\\n'), "
                "GROUP_CONCAT(k.REFERENCED_COLUMN_NAME ORDER BY k.ORDINAL_POSITION SEPARATOR '\\n') "
                "FROM information_schema.REFERENTIAL_CONSTRAINTS r JOIN information_schema.KEY_COLUMN_USAGE k "
                "ON k.CONSTRAINT_SCHEMA = r.CONSTRAINT_SCHEMA AND k.TABLE_NAME = r.TABLE_NAME "
                "AND k.CONSTRAINT_NAME = r.CONSTRAINT_NAME WHERE r.CONSTRAINT_SCHEMA = DATABASE() "
                "GROUP BY r.TABLE_NAME, r.CONSTRAINT_NAME, r.REFERENCED_TABLE_NAME, r.UPDATE_RULE, r.DELETE_RULE "
                "ORDER BY 1, 2")
            for table, name, parent, on_update, on_delete, columns, parents in cur.fetchall():
                if table not in COLUMNS:
                    continue
                clause = (f"FOREIGN KEY ({', '.join(map(quote, columns.split(chr(10))))}) REFERENCES "
                          f"{quote(parent)} ({', '.join(map(quote, parents.split(chr(10))))})")
                # RESTRICT is what a key declared without a rule reads as; NO ACTION is kept as said.
                clause += "".join(f" ON {event} {rule}" for event, rule in (("DELETE", on_delete), ("UPDATE", on_update))
                                  if rule != "RESTRICT")
                foreign.append((table, name, clause))
            drops: dict[str, list[str]] = {}
            for table, name, _ in foreign:
                drops.setdefault(table, []).append(f"DROP FOREIGN KEY {quote(name)}")
            cur.execute(
                "SELECT TABLE_NAME, INDEX_NAME, GROUP_CONCAT(CONCAT('`', REPLACE(COLUMN_NAME, '`', '``'), '`', "
                "IF(SUB_PART IS NULL, '', CONCAT('(', SUB_PART, ')'))) ORDER BY SEQ_IN_INDEX SEPARATOR ', ') "
                "FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND NON_UNIQUE = 1 "
                "GROUP BY TABLE_NAME, INDEX_NAME ORDER BY 1, 2")
            for table, name, columns in cur.fetchall():
                if table in COLUMNS:
                    drops.setdefault(table, []).append(f"DROP INDEX {quote(name)}")
                    indexes.append((table, f"ADD INDEX {quote(name)} ({columns})"))
            if not drop:  # the keys stay declared, unchecked during the load (foreign_key_checks)
                return foreign, []
            # One ALTER per table: each is a data-dictionary change the server makes durable.
            for table, clauses in drops.items():
                cur.execute(f"ALTER TABLE {quote(table)} {', '.join(clauses)}")
        return foreign, indexes

    # --- loading ---------------------------------------------------------------------------

    def _send(self, table: str, columns, rows: list) -> None:
        names = ", ".join(map(quote, columns))
        with self.conn.cursor() as cur:
            if self.method == "insert":
                cur.max_stmt_length = self._statement_bytes
                marks = ", ".join(["%s"] * len(columns))
                cur.executemany(f"INSERT INTO {quote(table)} ({names}) VALUES ({marks})", rows)
                return
            with open(self._file, "w", encoding="utf-8", newline="") as f:
                writer = csv.writer(f, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
                writer.writerows(rows if table in _PLAIN_TABLES else map(_loadable, rows))
            cur.execute(
                f"LOAD DATA LOCAL INFILE %s INTO TABLE {quote(table)} CHARACTER SET utf8mb4 "
                "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' "
                f"LINES TERMINATED BY '\\n' ({names})", (self._file,))
            loaded = cur.rowcount
            cur.execute("SHOW WARNINGS LIMIT 3")
            warnings = cur.fetchall()
        if warnings or loaded != len(rows):
            shown = "; ".join(str(w[2]) for w in warnings) or f"{loaded} of {len(rows)} rows loaded"
            raise MigrationError(f"loading {table} failed (a row the input checks missed): {shown}")

    @exclusive
    def write(self, batch: RowBatch) -> None:
        try:
            for table in TABLES:
                rows = batch.rows.get(table)
                if not rows:
                    continue
                if table in DICT_TABLES:
                    self._write_dicts(table, rows)
                else:
                    self._send(table, COLUMNS[table], first_of_each_key(table, rows, self._keys[table])
                               if table in self._keys else rows)
                self._pending += len(rows)
        except self._errors as e:
            if error_code(e) == DUPLICATE_KEY:
                raise MigrationError(f"two rows of {table} are one key to the target, which the input "
                                     f"checks missed (a bug): {first_line(e)}") from None
            raise MigrationError(f"writing the staging database failed: {first_line(e)}") from None
        if self._pending >= self.batch_size:
            self.commit()

    def _write_dicts(self, table: str, rows: list[dict]) -> None:
        for columns, tuples in dict_row_groups(table, rows, self._staged[table]):
            self._send(table, columns, tuples)

    def commit(self) -> None:
        self.conn.commit()
        self._pending = 0

    def _execute(self, sql: str, params=None) -> int:
        with self.conn.cursor() as cur:
            return cur.execute(sql, params)

    @exclusive
    def delete_entities(self, ids: dict[str, set]) -> None:
        """Delete entities by id, byte for byte (kind -> ids); prune_orphans then removes what
        hung from them."""
        self.commit()
        for kind, table, key in ENTITY_KEYS:
            for value in ids.get(kind, ()):
                self._execute(f"DELETE FROM {quote(table)} WHERE {quote(key)} = %s AND BINARY {quote(key)} = %s",
                              (value, value))
        self.commit()

    @exclusive
    def inputs_of_missing_datasets(self) -> list[tuple[str, str, int]]:
        self.commit()
        with self.conn.cursor() as cur:
            cur.execute(MISSING_DATASET_INPUTS)
            return [tuple(r) for r in cur.fetchall()]

    @exclusive
    def model_metrics_of_missing_runs(self) -> list[tuple[str, int, str, str]]:
        self.commit()
        with self.conn.cursor() as cur:
            cur.execute(MISSING_RUN_MODEL_METRICS)
            return [tuple(r) for r in cur.fetchall()]

    @exclusive
    def prune_orphans(self) -> dict[str, int]:
        """Delete rows whose parent entity was left out (--skip-invalid); rows deleted per table.

        The foreign keys the staged schema declares find most of them, repeated until nothing
        changes (a run's metrics go once the run has gone); run inputs, which have no key, are
        matched by run id. Parents are matched byte for byte."""
        self.commit()
        dropped: dict[str, int] = {}
        checks = [(table, _orphans(table, clause, "DELETE c")) for table, _, clause in self.foreign_keys]
        checks += [("inputs", _UNKEYED_INPUTS), ("input_tags", _UNKEYED_INPUT_TAGS)]
        changed = True
        while changed:
            changed = False
            for table, statement in checks:
                count = self._execute(statement)
                if count:
                    dropped[table] = dropped.get(table, 0) + count
                    changed = True
        self.commit()
        return dropped

    @exclusive
    def finish(self) -> None:
        """Make the secondary indexes (one ALTER per table: built from a sort) and the foreign
        keys again, check that every reference finds its row, commit, close. AUTO_INCREMENT
        moved past the largest experiment id by itself."""
        self.commit()
        try:
            # One ALTER per table: the indexes built from a sort; the keys, with foreign_key_checks
            # off, declared without reading the table...
            by_table: dict[str, list[str]] = {}
            for table, clause in self._indexes:
                by_table.setdefault(table, []).append(clause)
            for table, name, clause in self.foreign_keys if self._rebuild else ():
                by_table.setdefault(table, []).append(f"ADD CONSTRAINT {quote(name)} {clause}")
            for table, clauses in by_table.items():
                self._execute(f"ALTER TABLE {quote(table)} {', '.join(clauses)}")
            for table, name, clause in self.foreign_keys:
                # ... and checked here, as the server itself compares (by the collation).
                with self.conn.cursor() as cur:
                    cur.execute(_orphans(table, clause, "SELECT COUNT(*)", exact=False))
                    if cur.fetchone()[0]:
                        raise MigrationError(f"rows of {table} refer to entities that were not migrated "
                                             f"(foreign key {name})")
        except self._errors as e:
            raise MigrationError(f"finishing the staging database failed: {first_line(e)}") from None
        self.commit()
        self.close()

    def close(self) -> None:
        with suppress(Exception):
            self.conn.close()
        with suppress(OSError):
            os.unlink(self._file)

    def abort(self) -> None:
        """Stop the statement in flight (KILL QUERY from a connection of its own: PyMySQL has no
        cancel), then close."""
        with suppress(Exception):
            thread = self.conn.thread_id()
            other = self._connect()
            try:
                with other.cursor() as cur:
                    cur.execute(f"KILL QUERY {int(thread)}")
            finally:
                other.close()
        if not self._lock.acquire(timeout=60):
            return
        try:
            self.close()
        finally:
            self._lock.release()


# Tables whose rows hold no None and no booleans (numbers, and text keys from file names).
_PLAIN_TABLES = frozenset({"metrics", "latest_metrics"})


def _query(conn, sql: str) -> tuple:
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()


def _orphans(table: str, clause: str, verb: str, exact: bool = True) -> str:
    """The rows of table whose ``FOREIGN KEY (a, b) REFERENCES p (x, y)`` finds no row: ``verb``
    (DELETE c, SELECT COUNT(*)) on them. ``exact``: the parent's key must match byte for byte."""
    inner = clause[len("FOREIGN KEY ("):]
    columns, rest = inner.split(") REFERENCES ", 1)
    parent, parents = rest.split(" (", 1)
    parents = parents.split(")", 1)[0]
    pairs = list(zip(columns.split(", "), parents.split(", ")))
    present = " AND ".join(f"c.{c} IS NOT NULL" for c, _ in pairs)
    match = " AND ".join(f"p.{p} = c.{c}" + (f" AND BINARY p.{p} = BINARY c.{c}" if exact else "") for c, p in pairs)
    return f"{verb} FROM {quote(table)} c WHERE {present} AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE {match})"


# etl.sink.target.UNKEYED_ORPHANS, matching run ids byte for byte.
_UNKEYED_INPUTS = (
    "DELETE i FROM inputs i WHERE (i.destination_type = 'RUN' AND NOT EXISTS (SELECT 1 FROM runs r "
    "WHERE r.run_uuid = i.destination_id AND BINARY r.run_uuid = BINARY i.destination_id)) "
    "OR (i.source_type IN ('RUN_INPUT', 'RUN_OUTPUT') AND NOT EXISTS (SELECT 1 FROM runs r "
    "WHERE r.run_uuid = i.source_id AND BINARY r.run_uuid = BINARY i.source_id))"
)
_UNKEYED_INPUT_TAGS = (
    "DELETE t FROM input_tags t WHERE NOT EXISTS (SELECT 1 FROM inputs i "
    "WHERE i.input_uuid = t.input_uuid AND BINARY i.input_uuid = BINARY t.input_uuid)"
)
