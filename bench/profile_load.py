"""Where etl-migrate's load phase goes, stage by stage, in one process (no pool, no event loop).

    python bench/profile_load.py --source TREE [--top 20]

Runs the pipeline's own pieces one after another on the whole tree: discover (work units),
extract (read + parse, what the worker processes do), pickle round trip of the row batches (what
crossing the process boundary costs), and the single writer (executemany into a staged schema).
Prints each stage's seconds and the functions that dominate extract and write (cProfile tottime).
The sum is what --workers 1 would cost without overlap; compare with the load phase of a real run.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pickle
import pstats
import tempfile
import time
from pathlib import Path

from etl.config import DEFAULT_BATCH_SIZE, RUNS_PER_UNIT
from etl.sink.sqlite.schema import create_schema, schema_limits
from etl.sink.sqlite.writer import StagingWriter
from etl.source.extract import extract
from etl.source.layout import resolve_mlruns, tree_units


def top(profile: cProfile.Profile, n: int) -> str:
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(n)
    lines = out.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if "ncalls" in line)
    return "\n".join(lines[start : start + n + 1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", required=True, type=Path)
    p.add_argument("--top", type=int, default=20)
    args = p.parse_args()
    mlruns = resolve_mlruns(args.source)
    seconds = {}

    started = time.perf_counter()
    units = tree_units(mlruns, RUNS_PER_UNIT)
    seconds["discover"] = time.perf_counter() - started

    limits = schema_limits()
    parse = cProfile.Profile()
    started = time.perf_counter()
    batches = [parse.runcall(extract, unit, limits) for unit in units]
    seconds["extract (profiled)"] = time.perf_counter() - started
    started = time.perf_counter()
    for unit in units:
        extract(unit, limits)
    seconds["extract (plain)"] = time.perf_counter() - started

    started = time.perf_counter()
    batches = [pickle.loads(pickle.dumps(b, pickle.HIGHEST_PROTOCOL)) for b in batches]
    seconds["pickle round trip"] = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp) / "staging.db"
        started = time.perf_counter()
        create_schema(staging)
        seconds["schema"] = time.perf_counter() - started
        write = cProfile.Profile()
        started = time.perf_counter()
        writer = StagingWriter(staging, DEFAULT_BATCH_SIZE)
        for batch in batches:
            write.runcall(writer.write, batch)
        write.runcall(writer.finish)
        seconds["write (profiled)"] = time.perf_counter() - started

    rows = sum(b.count() for b in batches)
    files = sum(b.files for b in batches)
    print(f"{len(units)} units, {files:,} files, {rows:,} rows")
    for stage, s in seconds.items():
        print(f"  {stage:<22}{s:8.2f} s")
    print(f"\nextract: top {args.top} by own time\n{top(parse, args.top)}")
    print(f"\nwrite: top {args.top} by own time\n{top(write, args.top)}")


if __name__ == "__main__":
    main()
