"""The single writer alone, into SQLite and into PostgreSQL: rows/s of write() + finish().

    python bench/writer_speed.py --source TREE [--rounds 3] [--target URI ...]

The tree is read and parsed once, in this process, before anything is timed (as the pipeline's
producers would hand it over); then, per round and target, a new staging area gets MLflow's
schema (untimed) and the writer takes every batch and finishes (timed: for PostgreSQL that
includes re-making the foreign keys, which checks every row). Nothing is promoted. Beside wall
time: CPU seconds of this process (the writer's Python and psycopg side) and, for the server this
script starts, of all its processes (read from /proc on Linux): on a shared machine they show
which side bounds the load even when wall times are noise.

Without --target: a SQLite file in a temporary folder, and a new database on a PostgreSQL server
this script starts (tests/pg_server.py, PostgreSQL's default durability) if one is installed.
Targets alternate round by round, so drift of a shared machine touches both alike: compare the
ratio, not the absolute rows/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from etl.config import DEFAULT_BATCH_SIZE, RUNS_PER_UNIT
from etl.sink.sqlite.schema import schema_limits
from etl.sink.target import open_target
from etl.source.extract import extract
from etl.source.layout import (
    ExperimentTarget,
    resolve_mlruns,
    tree_units,
)
from etl.source.merge import experiment_id_map

REPO = Path(__file__).resolve().parent.parent


def read_tree(mlruns: Path, id_map: dict[int, int]) -> list:
    """The tree's batches, experiments renumbered as ``id_map`` says (as the pipeline's workers
    renumber them for a target that cannot hold their ids)."""
    targets = {old: ExperimentTarget(new) for old, new in id_map.items()}
    units = tree_units(mlruns, RUNS_PER_UNIT, targets)
    limits = schema_limits()
    return [extract(unit, limits) for unit in units]


def _stat(pid) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def server_cpu(server) -> float:
    """CPU seconds the server started by this script has used so far: every process under its
    postmaster, and (through the postmaster's children times) those already gone, such as the
    writer's backend after finish() closed its connection. Linux /proc; 0 elsewhere."""
    if server is None:
        return 0.0
    try:
        postmaster = int((server.folder / "data" / "postmaster.pid").read_text().split()[0])
        ticks = sum(int(v) for v in _stat(postmaster)[11:15])
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    fields = _stat(entry.name)
                except OSError:
                    continue
                if int(fields[1]) == postmaster:
                    ticks += int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return 0.0
    return ticks / os.sysconf("SC_CLK_TCK")


def time_writer(uri: str, batches: list, server=None) -> tuple[float, float, float]:
    """(wall, this process's CPU, the server's CPU) seconds of write() for every batch plus
    finish(), into a new staging area of uri."""
    target = open_target(uri)
    with target.staging() as area:
        area.create_schema()
        writer = area.writer(DEFAULT_BATCH_SIZE)
        server_before, cpu_before, started = server_cpu(server), time.process_time(), time.perf_counter()
        for batch in batches:
            writer.write(batch)
        writer.finish()
        return (time.perf_counter() - started, time.process_time() - cpu_before,
                server_cpu(server) - server_before)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", required=True, type=Path)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--target", action="append", default=[],
                   help="target URI (repeat); default: a SQLite file and a local PostgreSQL server")
    args = p.parse_args()
    mlruns = resolve_mlruns(args.source)
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
        # Parsed once per experiment id map (a target whose INTEGER cannot hold the tree's ids
        # gets its own), before anything is timed.
        batches: dict[str, list] = {}
        parsed: dict[tuple, list] = {}
        for uri in targets:
            id_map = experiment_id_map(mlruns, open_target(uri).max_experiment_id)
            key = tuple(sorted(id_map.items()))
            if key not in parsed:
                started = time.perf_counter()
                parsed[key] = read_tree(mlruns, id_map)
                print(f"{len(parsed[key])} batches, {sum(b.count() for b in parsed[key]):,} rows, read and "
                      f"parsed in {time.perf_counter() - started:.1f} s")
            batches[uri] = parsed[key]
        rows = sum(b.count() for b in batches[targets[0]])
        try:
            measured: dict[str, list[tuple[float, float, float]]] = {uri: [] for uri in targets}
            for _ in range(args.rounds):
                for uri in targets:
                    pg = server if uri.startswith("postgres") else None
                    measured[uri].append(time_writer(uri, batches[uri], pg))
        finally:
            if server is not None:
                server.stop()
    medians = {}
    for uri, results in measured.items():
        times = [r[0] for r in results]
        medians[uri] = statistics.median(times)
        cpu, backend = statistics.median(r[1] for r in results), statistics.median(r[2] for r in results)
        print(f"  {labels[uri]:<12}{rows / medians[uri]:>12,.0f} rows/s   median {medians[uri]:.2f} s "
              f"of {', '.join(f'{t:.2f}' for t in times)}; CPU s: writer {cpu:.2f}"
              + (f", server {backend:.2f}" if backend else ""))
    if len(targets) == 2:
        first, second = targets
        print(f"  median seconds, {labels[second]} / {labels[first]}: {medians[second] / medians[first]:.2f}x")


if __name__ == "__main__":
    main()
