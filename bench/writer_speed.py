"""The single writer alone, into SQLite, PostgreSQL and MySQL: rows/s of write() + finish().

    python bench/writer_speed.py --source TREE [--rounds 3] [--target URI ...]

The tree is read and parsed once, in this process, before anything is timed (as the pipeline's
producers would hand it over); then, per round and target, a new staging area gets MLflow's
schema (untimed) and the writer takes every batch and finishes (timed: for PostgreSQL that
includes re-making the foreign keys, which checks every row). Nothing is promoted. Beside wall
time: CPU seconds of this process (the writer's Python and psycopg side) and, for the server this
script starts, of all its processes (read from /proc on Linux): on a shared machine they show
which side bounds the load even when wall times are noise.

Without --target: a SQLite file in a temporary folder, a new database on a PostgreSQL server
this script starts (tests/pg_server.py, PostgreSQL's default durability) if one is installed, and
one on a MariaDB server it starts (tests/mysql_server.py, InnoDB's default durability) if one is
installed, written four ways: LOAD DATA LOCAL INFILE or multi-row INSERTs, each with the foreign
keys and secondary indexes taken off for the load and made again after it (the writer's default)
or kept during it. Targets alternate round by round, so drift of a shared machine touches all
alike: compare the ratios, not the absolute rows/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
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


def mariadb_cpu(server) -> float:
    """CPU seconds of the MariaDB server this script started (one process). Linux /proc."""
    if server is None:
        return 0.0
    try:
        return sum(int(v) for v in _stat(server.proc.pid)[11:13]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


# MySQL's ways to write: etl.sink.mysql.writer.MysqlWriter's method and rebuild_indexes.
MYSQL_WAYS = {
    "MySQL LOAD DATA": ("load", True),
    "MySQL INSERT": ("insert", True),
    "MySQL LOAD DATA, indexes kept": ("load", False),
    "MySQL INSERT, indexes kept": ("insert", False),
}


@dataclass
class Case:
    label: str
    uri: str
    server: object = None
    cpu: object = server_cpu
    way: str | None = None  # of MYSQL_WAYS; None: the target's own writer, as a run makes it


def make_writer(area, way: str | None):
    if way is None:
        return area.writer(DEFAULT_BATCH_SIZE)
    from etl.sink.mysql.writer import MysqlWriter

    method, rebuild = MYSQL_WAYS[way]
    return MysqlWriter(lambda **extra: area.target.connect(area.name, autocommit=False, **extra),
                       DEFAULT_BATCH_SIZE, method=method, rebuild_indexes=rebuild)


def time_writer(case: Case, batches: list) -> tuple[float, float, float]:
    """(wall, this process's CPU, the server's CPU) seconds of write() for every batch plus
    finish(), into a new staging area of the case's target."""
    target = open_target(case.uri)
    with target.staging() as area:
        area.create_schema()
        writer = make_writer(area, case.way)
        server_before, cpu_before, started = case.cpu(case.server), time.process_time(), time.perf_counter()
        for batch in batches:
            writer.write(batch)
        writer.finish()
        return (time.perf_counter() - started, time.process_time() - cpu_before,
                case.cpu(case.server) - server_before)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", required=True, type=Path)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--target", action="append", default=[],
                   help="target URI (repeat); default: a SQLite file, a local PostgreSQL server and a "
                        "local MariaDB server")
    args = p.parse_args()
    mlruns = resolve_mlruns(args.source)
    servers = []
    cases = [Case(uri.split(":", 1)[0], uri) for uri in args.target]
    with tempfile.TemporaryDirectory() as tmp:
        if not cases:
            cases.append(Case("SQLite", f"sqlite:///{tmp}/writer-speed.db"))
            sys.path.insert(0, str(REPO))
            from tests import mysql_server, pg_server

            if pg_server.bin_dir() is None:
                print("no PostgreSQL server binaries installed: no PostgreSQL")
            else:
                servers.append(pg_server.start_server(durable=True))
                cases.append(Case("PostgreSQL", servers[-1].create_database("writer_speed"), servers[-1]))
            if mysql_server.binaries() is None:
                print("no MariaDB server binaries installed: no MySQL")
            else:
                servers.append(mysql_server.start_server(durable=True))
                for way in MYSQL_WAYS:
                    uri = servers[-1].create_database(f"writer_speed_{len(cases)}")
                    cases.append(Case(way, uri, servers[-1], mariadb_cpu, way))
        # Parsed once per experiment id map (a target whose INTEGER cannot hold the tree's ids
        # gets its own), before anything is timed.
        batches: dict[str, list] = {}
        parsed: dict[tuple, list] = {}
        for case in cases:
            id_map = experiment_id_map(mlruns, open_target(case.uri).max_experiment_id)
            key = tuple(sorted(id_map.items()))
            if key not in parsed:
                started = time.perf_counter()
                parsed[key] = read_tree(mlruns, id_map)
                print(f"{len(parsed[key])} batches, {sum(b.count() for b in parsed[key]):,} rows, read and "
                      f"parsed in {time.perf_counter() - started:.1f} s")
            batches[case.label] = parsed[key]
        rows = sum(b.count() for b in batches[cases[0].label])
        try:
            measured: dict[str, list[tuple[float, float, float]]] = {case.label: [] for case in cases}
            for _ in range(args.rounds):
                for case in cases:
                    measured[case.label].append(time_writer(case, batches[case.label]))
        finally:
            for server in servers:
                server.stop()
    medians = {}
    for label, results in measured.items():
        times = [r[0] for r in results]
        medians[label] = statistics.median(times)
        cpu, backend = statistics.median(r[1] for r in results), statistics.median(r[2] for r in results)
        print(f"  {label:<32}{rows / medians[label]:>12,.0f} rows/s   median {medians[label]:.2f} s "
              f"of {', '.join(f'{t:.2f}' for t in times)}; CPU s: writer {cpu:.2f}"
              + (f", server {backend:.2f}" if backend else ""))
    first = cases[0].label
    for case in cases[1:]:
        print(f"  median seconds, {case.label} / {first}: {medians[case.label] / medians[first]:.2f}x")


if __name__ == "__main__":
    main()
