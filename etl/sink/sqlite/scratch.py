"""Scratch databases, the producers' half of the SQLite writer: producers bind their run-keyed
rows into SQLite files of their own, and the single writer moves each file into the staging
database with one ``INSERT ... SELECT`` per table.

Why: binding Python values row by row (``executemany``) was 40% of the single writer's time, and
the writer is the one part of the load that cannot run in parallel. A producer (a worker process)
binds its rows into a small file that only it writes; the writer then copies them in SQLite's own
C code, with no Python per row. The staging database still has exactly one writer: producers never
open it, and the writer only reads a scratch file once its producer has finished it.

Scratch files sit beside the staging file and are named after it, so whatever removes a staging
file (the run's own clean-up, the signal handler's, the next run's removal of a killed run's
leftovers) removes them too. Each is deleted as soon as it is merged: at most one per unit in
flight (``--queue-size`` plus ``--workers``) exists at a time.
"""

from __future__ import annotations

import os
import sqlite3
from collections import Counter
from dataclasses import dataclass
from itertools import chain, count
from operator import itemgetter
from pathlib import Path

from etl.rows import COLUMNS, DEDUPLICATED_TABLES, RowBatch, Scratch
from etl.source.extract import extract
from etl.sql_limits import Limits

# The tables that hold most rows of a tree, all keyed by run (run_uuid first in their tuples) and
# with no experiment id: the pipeline's checks need none of their values, only which runs they
# belong to (a run id found twice leaves all of that run's rows out: Scratch.skip).
SPILLED_TABLES = ("params", "tags", "metrics", "latest_metrics")
RUN_COLUMN = "run_uuid"

# One file per unit in each producer process (or thread: a small tree is parsed in threads).
_numbers = count()


@dataclass(frozen=True)
class Spill:
    """What a producer needs to write scratch files: where (a path prefix beside the staging
    file). Picklable, so ``Spill(...).extract`` runs in a worker process."""

    prefix: str

    def extract(self, unit, limits: Limits) -> RowBatch:
        """extract() the unit, then move the rows of SPILLED_TABLES into a new scratch file."""
        batch = extract(unit, limits)
        if not any(batch.rows.get(table) for table in SPILLED_TABLES):
            return batch
        path = f"{self.prefix}{os.getpid()}-{next(_numbers)}.db"
        runs = write_scratch(path, batch.rows)
        for table in SPILLED_TABLES:
            batch.rows.pop(table, None)
        batch.scratch = Scratch(path, runs)
        return batch


def write_scratch(path: str, rows: dict[str, list[tuple]]) -> dict[str, dict[str, int]]:
    """Write the rows of SPILLED_TABLES into a new database at path; return how many of each
    table's rows belong to each run id."""
    # Columns without a declared type keep each value exactly as bound (no affinity): the
    # staging table's own affinity applies when the writer copies them in, as it would to
    # the same values bound there.
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN")
        runs: dict[str, dict[str, int]] = {}
        for table in SPILLED_TABLES:
            table_rows = rows.get(table)
            if not table_rows:
                continue
            columns = COLUMNS[table]
            quoted = ", ".join(f'"{c}"' for c in columns)
            conn.execute(f'CREATE TABLE "{table}" ({quoted})')
            insert_rows(conn, table, len(columns), table_rows)
            runs[table] = dict(Counter(map(itemgetter(0), table_rows)))
        conn.execute("COMMIT")
    finally:
        conn.close()
    return runs


# Rows per INSERT statement: binding goes value by value either way, but one statement per
# row costs as much again in per-statement work (bench/README.md, "The load").
ROWS_PER_INSERT = 64


def insert_rows(conn: sqlite3.Connection, table: str, width: int, rows: list[tuple]) -> None:
    one = "(" + ", ".join("?" * width) + ")"
    full, rest = divmod(len(rows), ROWS_PER_INSERT)
    if full:
        values = list(chain.from_iterable(rows[: full * ROWS_PER_INSERT]))
        step = width * ROWS_PER_INSERT
        conn.executemany(f'INSERT INTO "{table}" VALUES {", ".join([one] * ROWS_PER_INSERT)}',
                         [values[i : i + step] for i in range(0, len(values), step)])  # fmt: skip
    if rest:
        conn.executemany(f'INSERT INTO "{table}" VALUES {one}', rows[full * ROWS_PER_INSERT :])


def merge_statement(table: str, skipped: int) -> str:
    """INSERT ... SELECT of an attached scratch table into the staging table of the same name,
    leaving out the rows of ``skipped`` run ids (bound as parameters). A repeated metric point
    is kept once, as the writer's own inserts keep it."""
    verb = "INSERT OR IGNORE" if table in DEDUPLICATED_TABLES else "INSERT"
    columns = ", ".join(f'"{c}"' for c in COLUMNS[table])
    where = f' WHERE "{RUN_COLUMN}" NOT IN ({", ".join("?" * skipped)})' if skipped else ""
    return f'{verb} INTO main."{table}" ({columns}) SELECT {columns} FROM scratch."{table}"{where}'


def discard(path: str) -> None:
    Path(path).unlink(missing_ok=True)
