"""The single writer alone, into SQLite and into PostgreSQL: rows/s of write() + finish().

    python bench/writer_speed.py --source TREE [--rounds 3] [--target URI ...]

The tree is read and parsed once, in this process, before anything is timed (as the pipeline's
producers would hand it over); then, per round and target, a new staging area gets MLflow's
schema (untimed) and the writer takes every batch and finishes (timed: for PostgreSQL that
includes re-making the foreign keys, which checks every row). Nothing is promoted.

Without --target: a SQLite file in a temporary folder, and a new database on a PostgreSQL server
this script starts (tests/pg_server.py, PostgreSQL's default durability) if one is installed.
Targets alternate round by round, so drift of a shared machine touches both alike: compare the
ratio, not the absolute rows/s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from etl.config import DEFAULT_BATCH_SIZE, RUNS_PER_UNIT
from etl.rows import remap_experiment_ids
from etl.sink.schema import schema_limits
from etl.sink.target import open_target
from etl.source.extract import extract
from etl.source.layout import (
    RegisteredModelUnit,
    experiment_dirs,
    experiment_id_map,
    experiment_units,
    registered_model_dirs,
    resolve_mlruns,
)

REPO = Path(__file__).resolve().parent.parent


def read_tree(mlruns: Path) -> list:
    units = [u for path, deleted in experiment_dirs(mlruns)
             for u in experiment_units(path, deleted, RUNS_PER_UNIT)]  # fmt: skip
    units += [RegisteredModelUnit(path) for path in registered_model_dirs(mlruns)]
    limits = schema_limits()
    return [extract(unit, limits) for unit in units]


def time_writer(uri: str, mlruns: Path, batches: list) -> float:
    """Seconds of write() for every batch plus finish(), into a new staging area of uri."""
    target = open_target(uri)
    id_map = experiment_id_map(mlruns, target.max_experiment_id)
    with target.staging() as area:
        area.create_schema()
        writer = area.writer(DEFAULT_BATCH_SIZE)
        started = time.perf_counter()
        for batch in batches:
            if id_map:
                remap_experiment_ids(batch, id_map)
            writer.write(batch)
        writer.finish()
        return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", required=True, type=Path)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--target", action="append", default=[],
                   help="target URI (repeat); default: a SQLite file and a local PostgreSQL server")
    args = p.parse_args()
    mlruns = resolve_mlruns(args.source)
    started = time.perf_counter()
    batches = read_tree(mlruns)
    rows = sum(b.count() for b in batches)
    print(f"{len(batches)} batches, {rows:,} rows, read and parsed in {time.perf_counter() - started:.1f} s")

    server = None
    targets = list(args.target)
    with tempfile.TemporaryDirectory() as tmp:
        if not targets:
            targets.append(f"sqlite:///{tmp}/writer-speed.db")
            sys.path.insert(0, str(REPO))
            from tests.pg_server import bin_dir, start_server

            if bin_dir() is None:
                print("no PostgreSQL server binaries installed: SQLite only")
            else:
                server = start_server(durable=True)
                targets.append(server.create_database("writer_speed"))
        labels = {uri: "PostgreSQL" if uri.startswith("postgres") else "SQLite" for uri in targets}
        try:
            seconds: dict[str, list[float]] = {uri: [] for uri in targets}
            for _ in range(args.rounds):
                for uri in targets:
                    seconds[uri].append(time_writer(uri, mlruns, batches))
        finally:
            if server is not None:
                server.stop()
    medians = {}
    for uri, times in seconds.items():
        medians[uri] = statistics.median(times)
        print(f"  {labels[uri]:<12}{rows / medians[uri]:>12,.0f} rows/s   median {medians[uri]:.2f} s "
              f"of {', '.join(f'{t:.2f}' for t in times)}")
    if len(targets) == 2:
        first, second = targets
        print(f"  median seconds, {labels[second]} / {labels[first]}: {medians[second] / medians[first]:.2f}x")


if __name__ == "__main__":
    main()
