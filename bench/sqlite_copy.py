"""SQLite's own copy of a migrated database into an empty one: the ceiling of issue 22.

    python bench/sqlite_copy.py --source-db MIGRATED.db --target sqlite:///new.db [--report R.json]

Makes MLflow's empty schema at the target (etl-migrate's cached template, untimed), attaches the
source and runs ``INSERT INTO t SELECT * FROM source.t`` for every table etl-migrate fills, in one
transaction, with the load's PRAGMAs (etl.sink.sqlite.writer). Into an empty table with the same
indexes SQLite copies the table's and the indexes' B-trees page by page (its transfer
optimization): no per-row B-tree search, no Python. The report's phase ``copy`` is those
statements alone; rows are the source's.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import time
from pathlib import Path

from etl.rows import TABLES
from etl.sink.sqlite.schema import create_schema
from etl.sink.sqlite.staging import target_path
from etl.sink.sqlite.writer import LOAD_PRAGMAS


def copy(source: Path, target: Path) -> tuple[int, float]:
    create_schema(target)
    conn = sqlite3.connect(target, isolation_level=None)
    try:
        for pragma in LOAD_PRAGMAS:
            conn.execute(pragma)
        conn.execute("ATTACH DATABASE ? AS source", (str(source),))
        rows = sum(conn.execute(f'SELECT COUNT(*) FROM source."{t}"').fetchone()[0] for t in TABLES)
        started = time.perf_counter()
        conn.execute("BEGIN")
        for table in TABLES:
            conn.execute(f'INSERT INTO main."{table}" SELECT * FROM source."{table}"')
        conn.execute("COMMIT")
        return rows, time.perf_counter() - started
    finally:
        conn.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source-db", required=True, type=Path)
    p.add_argument("--target", required=True, help="sqlite:///path of a database that does not exist yet")
    p.add_argument("--report", type=Path)
    args = p.parse_args()
    target = target_path(args.target)
    if target.exists():
        raise SystemExit(f"{target} exists")
    rows, seconds = copy(args.source_db, target)
    print(f"{rows:,} rows in {seconds:.2f} s: {rows / seconds:,.0f} rows/s")
    if args.report:
        args.report.write_text(json.dumps({"rows": rows, "phases": {"copy": round(seconds, 3)}}))


if __name__ == "__main__":
    main()
