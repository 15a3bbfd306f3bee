"""Ways the rows of a tree can go into MLflow's SQLite schema, timed in CPU seconds per side.

    python bench/load_paths.py --source TREE [--rounds 2]

The tree is read once (untimed), then per round and way, into a new staging file:

- ``executemany``: the producer parses (and pickles, as crossing to the writer's process costs),
  the writer unpickles and binds every row with executemany.
- ``scratch, runs by experiment``: the producer parses and binds the run-keyed rows into a
  scratch file of its own; the writer copies each file in with INSERT ... SELECT
  (etl.sink.sqlite.scratch). Runs come one experiment after another, each experiment's in the
  order of their ids (how etl-migrate cut a tree before issue 22).
- ``scratch, runs by id``: the same, the runs of all experiments in the order of their ids
  (etl.source.layout.tree_units: what etl-migrate does), so MLflow's run-keyed indexes grow at
  their end only.

Every index is kept up to date as rows go in. Then SQLite's own ``INSERT INTO t SELECT * FROM
attached.t`` of every table of the last staged database into an empty copy of MLflow's schema
(same tables, same indexes: SQLite copies the tables' and indexes' B-trees as they are, its
transfer optimization): the ceiling issue 22 measures against.

CPU seconds per side (producer: what the worker processes do; writer: the single writer, the
load's serial part) do not depend on what else the machine runs as wall seconds do; on two cores
the load takes about max(writer, (producer + writer) / 2).
"""

from __future__ import annotations

import argparse
import os
import pickle
import sqlite3
import statistics
import sys
import tempfile
import time
from itertools import groupby
from pathlib import Path

from etl.config import DEFAULT_BATCH_SIZE, RUNS_PER_UNIT
from etl.rows import TABLES
from etl.sink.sqlite.schema import create_schema, schema_limits
from etl.sink.sqlite.scratch import Spill
from etl.sink.sqlite.writer import LOAD_PRAGMAS, StagingWriter
from etl.source.extract import extract
from etl.source.layout import RunsUnit, resolve_mlruns, tree_units

WAYS = ("executemany", "scratch, runs by experiment", "scratch, runs by id")


def units_of(mlruns: Path, by_experiment: bool) -> list:
    units = tree_units(mlruns, RUNS_PER_UNIT)
    if not by_experiment:
        return units
    runs = sorted((run for u in units if isinstance(u, RunsUnit) for run in u.runs),
                  key=lambda run: (run.experiment_path, run.name))  # fmt: skip
    chunks = [RunsUnit(tuple(group[i : i + RUNS_PER_UNIT]))
              for _, runs_of in groupby(runs, key=lambda run: run.experiment_path)
              for group in [list(runs_of)] for i in range(0, len(group), RUNS_PER_UNIT)]  # fmt: skip
    return [u for u in units if not isinstance(u, RunsUnit)] + chunks


def load(way: str, units: list, folder: Path) -> tuple[float, float, float, int, Path]:
    """(producer CPU s, writer CPU s during the load, writer CPU s in finish(), rows, database)."""
    db = folder / "staging.db"
    db.unlink(missing_ok=True)
    create_schema(db)
    limits = schema_limits()
    spill = Spill(str(folder / "scratch-")) if way != "executemany" else None
    writer = StagingWriter(db, DEFAULT_BATCH_SIZE, spill)
    producer = write = 0.0
    rows = 0
    for unit in units:
        started = time.process_time()
        batch = spill.extract(unit, limits) if spill else extract(unit, limits)
        data = pickle.dumps(batch, pickle.HIGHEST_PROTOCOL)
        producer += time.process_time() - started
        started = time.process_time()
        batch = pickle.loads(data)
        rows += batch.count()
        writer.write(batch)
        write += time.process_time() - started
    started = time.process_time()
    writer.finish()
    return producer, write, time.process_time() - started, rows, db


def sqlite_copy(source: Path, folder: Path) -> tuple[float, float, int]:
    """(wall s, CPU s, rows) of INSERT INTO t SELECT * FROM attached.t for every table we fill."""
    target = folder / "copy.db"
    target.unlink(missing_ok=True)
    create_schema(target)
    conn = sqlite3.connect(target, isolation_level=None)
    try:
        for pragma in LOAD_PRAGMAS:
            conn.execute(pragma)
        conn.execute("ATTACH DATABASE ? AS source", (str(source),))
        rows = sum(conn.execute(f'SELECT COUNT(*) FROM source."{t}"').fetchone()[0] for t in TABLES)
        wall, cpu = time.perf_counter(), time.process_time()
        conn.execute("BEGIN")
        for table in TABLES:
            conn.execute(f'INSERT INTO main."{table}" SELECT * FROM source."{table}"')
        conn.execute("COMMIT")
        return time.perf_counter() - wall, time.process_time() - cpu, rows
    finally:
        conn.close()
        target.unlink()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", required=True, type=Path)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    mlruns = resolve_mlruns(args.source)
    units = {False: units_of(mlruns, False), True: units_of(mlruns, True)}
    print(f"{len(units[False])} units; load average {os.getloadavg()[0]:.1f}")
    results: dict[str, list] = {way: [] for way in WAYS}
    copies = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("ETL_BENCH_SCRATCH")) as tmp:
        folder = Path(tmp)
        for _ in range(args.rounds):
            for way in WAYS:
                producer, write, finish, rows, db = load(way, units[way.endswith("experiment")], folder)
                results[way].append((producer, write, finish, rows))
                print(f"  {way:<28} producer {producer:6.2f}  writer {write:6.2f} + finish {finish:5.2f} CPU s"
                      f"  ({rows:,} rows; load average {os.getloadavg()[0]:.1f})", flush=True)  # fmt: skip
            copies.append(sqlite_copy(db, folder))
            print(f"  {'SQLite INSERT ... SELECT':<28} {copies[-1][0]:6.2f} s wall, {copies[-1][1]:6.2f} CPU s", flush=True)
    rows = results[WAYS[0]][0][3]
    copy_cpu = statistics.median(c[1] for c in copies)
    print(f"\nmedians, {rows:,} rows; CPU seconds per million rows, and rows per writer CPU second:")
    for way, runs in results.items():
        producer, write, finish = (statistics.median(r[i] for r in runs) for i in range(3))
        per = 1e6 / rows
        print(f"  {way:<28} producer {producer * per:5.2f}  writer {write * per:5.2f} + finish {finish * per:5.2f}"
              f"   {rows / (write + finish):>9,.0f} rows/writer CPU s = {copy_cpu / (write + finish):.2f}x SQLite's copy")  # fmt: skip
    print(f"  {'SQLite INSERT ... SELECT':<28} {copy_cpu * 1e6 / rows:5.2f}{'':>31}{rows / copy_cpu:>9,.0f} rows/CPU s")


if __name__ == "__main__":
    sys.exit(main())
