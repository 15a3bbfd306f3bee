"""The single writer: the only connection to the staging file.

Rows arrive as RowBatches; each table's rows go in with one ``executemany`` per batch, and a
transaction is committed every ``batch_size`` rows. The staging file is disposable until it is
promoted, so it is written with no rollback journal and no fsync: a crash loses only the staging
file, which is removed, and the target was never touched.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from etl.errors import MigrationError
from etl.rows import COLUMNS, DEDUPLICATED_TABLES, TABLES, RowBatch

LOAD_PRAGMAS = (
    "PRAGMA journal_mode=OFF",
    "PRAGMA synchronous=OFF",
    "PRAGMA locking_mode=EXCLUSIVE",
    "PRAGMA temp_store=MEMORY",
    # 32 MiB of page cache: enough for the B-tree interiors, small enough to keep RSS flat.
    "PRAGMA cache_size=-32768",
)


def insert_sql(table: str) -> str:
    columns = COLUMNS[table]
    verb = "INSERT OR IGNORE" if table in DEDUPLICATED_TABLES else "INSERT"
    quoted = ", ".join(f'"{c}"' for c in columns)
    marks = ", ".join("?" * len(columns))
    return f'{verb} INTO "{table}" ({quoted}) VALUES ({marks})'


class StagingWriter:
    def __init__(self, path: Path, batch_size: int):
        self.path = path
        self.batch_size = batch_size
        # The writer runs in worker threads handed out by anyio, one call at a time.
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in LOAD_PRAGMAS:
            self.conn.execute(pragma)
        self._sql = {table: insert_sql(table) for table in TABLES}
        self._pending = 0
        self._in_transaction = False

    def write(self, batch: RowBatch) -> None:
        if not self._in_transaction:
            self.conn.execute("BEGIN")
            self._in_transaction = True
        try:
            for table in TABLES:
                rows = batch.rows.get(table)
                if rows:
                    self.conn.executemany(self._sql[table], rows)
                    self._pending += len(rows)
        except sqlite3.IntegrityError as e:
            raise MigrationError(f"the source holds two entities with the same key: {e}") from e
        if self._pending >= self.batch_size:
            self.commit()

    def commit(self) -> None:
        if self._in_transaction:
            self.conn.execute("COMMIT")
            self._in_transaction = False
        self._pending = 0

    def finish(self) -> None:
        """Commit, prove referential integrity, and close."""
        self.commit()
        broken = self.conn.execute("PRAGMA foreign_key_check").fetchmany(5)
        if broken:
            shown = "; ".join(f"{table} row {rowid} -> {parent}" for table, rowid, parent, _ in broken)
            raise MigrationError(f"rows refer to entities that were not migrated: {shown}")
        self.conn.close()

    def abort(self) -> None:
        try:
            self.conn.close()
        except sqlite3.Error:
            pass
