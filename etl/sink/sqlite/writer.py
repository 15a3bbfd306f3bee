"""The single writer: the only connection to the staging file.

Rows arrive as RowBatches; each table's rows go in with one ``executemany`` per batch, except the
run-keyed tables' rows, which producers bound into scratch files of their own and which go in
with one ``INSERT ... SELECT`` per table (etl.sink.sqlite.scratch). A transaction is committed
every ``batch_size`` rows (and after each scratch file). The staging file is disposable until it
is promoted, so it is written with no rollback journal and no fsync: a crash loses only the
staging file, which is removed, and the target was never touched.

Every index of MLflow's schema is kept up to date as rows go in. The runs come in the order of
their ids (etl.source.layout.tree_units), so the run-keyed indexes only grow at their end, which
costs SQLite less than building them after the load (bench/README.md, "The load").
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import threading
from pathlib import Path

from etl.errors import MigrationError
from etl.rows import COLUMNS, DEDUPLICATED_TABLES, DICT_TABLES, TABLES, RowBatch, Scratch
from etl.sink.sqlite.schema import table_columns
from etl.sink.sqlite.scratch import RUN_COLUMN, Spill, discard, merge_statement
from etl.sink.target import (
    ENTITY_KEYS,
    MISSING_DATASET_INPUTS,
    MISSING_RUN_MODEL_METRICS,
    OPTIONAL_COLUMNS,
    UNKEYED_ORPHANS,
    exclusive,
)

LOAD_PRAGMAS = (
    "PRAGMA journal_mode=OFF",
    "PRAGMA synchronous=OFF",
    "PRAGMA locking_mode=EXCLUSIVE",
    "PRAGMA temp_store=MEMORY",
    # 16 MiB of page cache: enough for the B-tree interiors (32 MiB loaded no faster, on trees
    # whose database outgrows both), small enough to keep RSS flat.
    "PRAGMA cache_size=-16384",
)


def insert_sql(table: str, columns: tuple[str, ...]) -> str:
    verb = "INSERT OR IGNORE" if table in DEDUPLICATED_TABLES else "INSERT"
    quoted = ", ".join(f'"{c}"' for c in columns)
    marks = ", ".join("?" * len(columns))
    return f'{verb} INTO "{table}" ({quoted}) VALUES ({marks})'


class StagingWriter:
    def __init__(self, path: Path, batch_size: int, spill: Spill | None = None):
        self.path = path
        # Producers bind run-keyed rows into scratch files named by this prefix; write() copies
        # each in with SQL (etl.sink.sqlite.scratch).
        self.spill = spill
        self.batch_size = batch_size
        # The writer runs in worker threads handed out by anyio, one call at a time.
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in LOAD_PRAGMAS:
            self.conn.execute(pragma)
        self._sql = {table: insert_sql(table, COLUMNS[table]) for table in TABLES}
        self._staged = {
            table: {name for name, _, _ in table_columns(self.conn, table)} for table in DICT_TABLES
        }
        self._dict_sql: dict[tuple[str, tuple[str, ...]], tuple[str, tuple[str, ...]]] = {}
        self._pending = 0
        self._in_transaction = False
        self._lock = threading.Lock()

    @exclusive
    def write(self, batch: RowBatch) -> None:
        if not self._in_transaction:
            self.conn.execute("BEGIN")
            self._in_transaction = True
        try:
            for table in TABLES:
                rows = batch.rows.get(table)
                if not rows:
                    continue
                if table in DICT_TABLES:
                    self._write_dicts(table, rows)
                else:
                    self.conn.executemany(self._sql[table], rows)
                self._pending += len(rows)
            if batch.scratch:
                self._merge(batch.scratch)
        except sqlite3.IntegrityError as e:
            # Every constraint of the target is checked as input first (etl.sql_limits, the clash
            # checks in the pipeline): reaching this is a bug, and says so.
            raise MigrationError(f"a row broke a constraint the input checks missed (a bug): {e}") from e
        except sqlite3.OperationalError as e:
            raise self._write_failed(e) from e
        if self._pending >= self.batch_size:
            self.commit()

    def _merge(self, scratch: Scratch) -> None:
        """Copy a producer's scratch file in, table by table, in SQLite's own code, and delete
        it. An attached database is detached only outside a transaction: so commit first."""
        skipped = sorted(scratch.skipped)
        self.conn.execute("ATTACH DATABASE ? AS scratch", (scratch.path,))
        try:
            for table in scratch.runs:
                self.conn.execute(merge_statement(table, len(skipped)), skipped)
            self._pending += sum(scratch.counts().values())
            self.commit()
        except BaseException:
            # The run stops with this error, and the staging file goes with it.
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            self._in_transaction = False
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("DETACH DATABASE scratch")
            raise
        else:
            self.conn.execute("DETACH DATABASE scratch")
        finally:
            discard(scratch.path)

    def _write_dicts(self, table: str, rows: list[dict]) -> None:
        groups: dict[tuple[str, ...], list[dict]] = {}
        for row in rows:
            groups.setdefault(tuple(row), []).append(row)
        for keys, group in groups.items():
            sql, kept = self._dict_statement(table, keys)
            self.conn.executemany(sql, [tuple(row[k] for k in kept) for row in group])

    def _dict_statement(self, table: str, keys: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
        cached = self._dict_sql.get((table, keys))
        if cached is None:
            staged = self._staged[table]
            unknown = [k for k in keys if k not in staged and k not in OPTIONAL_COLUMNS.get(table, ())]
            if unknown:
                raise MigrationError(f"the installed MLflow's {table!r} table has no column(s) {unknown}")
            kept = tuple(k for k in keys if k in staged)
            cached = self._dict_sql[(table, keys)] = (insert_sql(table, kept), kept)
        return cached

    def commit(self) -> None:
        if self._in_transaction:
            try:
                self.conn.execute("COMMIT")
            except sqlite3.OperationalError as e:
                raise self._write_failed(e) from e
            self._in_transaction = False
        self._pending = 0

    def _write_failed(self, error: sqlite3.OperationalError) -> MigrationError:
        # SQLite reports a full disk as "database or disk is full", and a write refused by a
        # file-size limit (EFBIG) as a generic "disk I/O error"; both mean no room to write.
        free = shutil.disk_usage(self.path.parent).free
        return MigrationError(
            f"writing the staging database {self.path} failed: {error} (is the disk full, or a "
            f"file-size limit reached? {free / 2**20:,.0f} MiB free in {self.path.parent})"
        )

    @exclusive
    def delete_entities(self, ids: dict[str, set]) -> None:
        """Delete experiments, runs, traces and logged models by id; prune_orphans then removes
        what hung from them."""
        self.commit()
        self.conn.execute("BEGIN")
        for kind, table, key in ENTITY_KEYS:
            self.conn.executemany(f'DELETE FROM "{table}" WHERE "{key}" = ?', [(i,) for i in ids.get(kind, ())])
        self.conn.execute("COMMIT")

    @exclusive
    def inputs_of_missing_datasets(self) -> list[tuple[str, str, int]]:
        """(input uuid, run id, experiment id) of each run input whose dataset is not staged."""
        self.commit()
        return self.conn.execute(MISSING_DATASET_INPUTS).fetchall()

    @exclusive
    def model_metrics_of_missing_runs(self) -> list[tuple[str, int, str, str]]:
        """(model id, experiment id, metric key, run id), once per metric file, of logged-model
        metrics whose run is not staged."""
        self.commit()
        return self.conn.execute(MISSING_RUN_MODEL_METRICS).fetchall()

    @exclusive
    def prune_orphans(self) -> dict[str, int]:
        """Delete rows whose parent entity was left out (--skip-invalid); rows deleted per table.

        Foreign keys find most of them (runs of a skipped experiment, then those runs' params,
        metrics...); run inputs and their tags have no foreign key and are matched by run id.
        """
        self.commit()
        dropped: dict[str, int] = {}
        while True:
            orphans = self.conn.execute("PRAGMA foreign_key_check").fetchall()
            if not orphans:
                break
            self.conn.execute("BEGIN")
            for table, rowid, _parent, _fk in orphans:
                self.conn.execute(f'DELETE FROM "{table}" WHERE rowid = ?', (rowid,))
                dropped[table] = dropped.get(table, 0) + 1
            self.conn.execute("COMMIT")
        for table, sql in UNKEYED_ORPHANS:
            count = self.conn.execute(sql).rowcount
            if count:
                dropped[table] = dropped.get(table, 0) + count
        return dropped

    @exclusive
    def finish(self) -> None:
        """Commit, prove referential integrity, and close."""
        self.commit()
        broken = self._dangling()
        if broken:
            raise MigrationError(f"rows refer to entities that were not migrated: {'; '.join(broken[:5])}")
        self.conn.close()

    def _dangling(self) -> list[str]:
        """Rows whose foreign key names no row (the input checks make this a bug). PRAGMA
        foreign_key_check looks up every row's parent: 10 M lookups for 10 M metric points. A
        table whose one key is its run's is proven by its distinct runs instead, read off its
        run_uuid index (a third of the time)."""
        found = []
        for table in TABLES:
            keys = [(k[2], k[3], k[4]) for k in self.conn.execute(f'PRAGMA foreign_key_list("{table}")')]
            if keys == [("runs", RUN_COLUMN, RUN_COLUMN)]:
                found += [f"{table} rows of run {run} -> runs" for (run,) in self.conn.execute(
                    f'WITH used AS MATERIALIZED (SELECT DISTINCT run_uuid FROM "{table}") '
                    "SELECT run_uuid FROM used WHERE run_uuid NOT IN (SELECT run_uuid FROM runs)")]
            else:
                found += [f"{table} row {rowid} -> {parent}" for _, rowid, parent, _ in
                          self.conn.execute(f'PRAGMA foreign_key_check("{table}")')]  # fmt: skip
        return found

    def abort(self) -> None:
        """Stop whatever the writer thread is doing and close the connection.

        The run may be unwinding (Ctrl-C, an error elsewhere) while a worker thread is inside
        executemany; closing a connection under a running statement crashes the process, so
        interrupt the statement and wait for the thread to let go first.
        """
        try:
            self.conn.interrupt()
        except sqlite3.ProgrammingError:  # already closed by finish()
            return
        if not self._lock.acquire(timeout=60):
            return  # still busy after an interrupt: leave it; the process is exiting anyway
        try:
            self.conn.close()
        except sqlite3.Error:
            pass
        finally:
            self._lock.release()
