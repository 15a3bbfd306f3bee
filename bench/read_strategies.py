"""Reading the tree: aiofiles in the event loop against worker processes, measured on one tree.

    uv run --with aiofiles python bench/read_strategies.py --source TREE [--concurrency 64]

Why etl-migrate reads in worker processes and does not depend on aiofiles (issue 11). Three ways
to get every file the load reads (all but artifacts) off the disk, on the same warm tree:

- ``sync``: one thread, ``open().read()`` per file, bytes only: the floor for reading;
- ``aiofiles``: the event loop, ``aiofiles.open`` + ``read`` per file, ``--concurrency`` files at a
  time, bytes only (no parsing at all: this only gets better for aiofiles);
- ``this process``: ``extract`` (read AND parse) on every work unit, one after another in this
  process: the least that reading with aiofiles and parsing in the event loop could cost, since
  plain reads are faster than aiofiles' and the parsing is the same;
- ``processes``: what the pipeline does: ``extract`` (read AND parse into rows) on every work unit
  in ``process_count(workers)`` worker processes through ``anyio.to_process``.

aiofiles runs each open/read/close on a thread of a pool and hops back to the loop for each: three
round trips per small file, and the parsing would still be left to do under the GIL of the
process that also feeds the writer. Compare its bytes-only seconds with ``processes``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import anyio
import anyio.to_process

from etl.config import DEFAULT_WORKERS, RUNS_PER_UNIT
from etl.pipeline import process_count
from etl.sink.sqlite.schema import schema_limits
from etl.source.extract import extract
from etl.source.layout import resolve_mlruns, tree_units


def data_files(mlruns: Path) -> list[str]:
    out = []
    for folder, dirs, files in os.walk(mlruns):
        dirs[:] = [d for d in dirs if d != "artifacts"]
        out += [os.path.join(folder, name) for name in files]
    return out


def read_sync(paths: list[str]) -> int:
    total = 0
    for path in paths:
        with open(path, "rb") as f:
            total += len(f.read())
    return total


async def read_aiofiles(paths: list[str], concurrency: int) -> int:
    import aiofiles

    total = 0
    limit = anyio.Semaphore(concurrency)

    async def one(path: str) -> None:
        nonlocal total
        async with limit, aiofiles.open(path, "rb") as f:
            total += len(await f.read())

    async with anyio.create_task_group() as tg:
        for path in paths:
            tg.start_soon(one, path)
    return total


def work_units(mlruns: Path) -> list:
    return tree_units(mlruns, RUNS_PER_UNIT)


def extract_here(mlruns: Path, limits) -> int:
    return sum(extract(unit, limits).count() for unit in work_units(mlruns))


async def extract_in_processes(mlruns: Path, workers: int, limits) -> int:
    units = work_units(mlruns)
    limiter = anyio.CapacityLimiter(process_count(workers))
    rows = 0

    async def one(unit) -> None:
        nonlocal rows
        batch = await anyio.to_process.run_sync(extract, unit, limits, limiter=limiter)
        rows += batch.count()

    async with anyio.create_task_group() as tg:
        for unit in units:
            tg.start_soon(one, unit)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", type=Path, required=True)
    p.add_argument("--concurrency", type=int, default=64, help="files in flight for aiofiles")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    args = p.parse_args()
    mlruns = resolve_mlruns(args.source)
    paths = data_files(mlruns)
    limits = schema_limits()  # what the target accepts, checked while parsing as in a run
    read_sync(paths)  # warm the page cache: every strategy below reads from memory

    async def processes() -> int:  # worker start-up included, as in a real run
        return await extract_in_processes(mlruns, args.workers, limits)

    results = {}
    for name, run in (
        ("sync (bytes only)", lambda: read_sync(paths)),
        ("aiofiles (bytes only)", lambda: anyio.run(read_aiofiles, paths, args.concurrency)),
        ("this process (read + parse)", lambda: extract_here(mlruns, limits)),
        (f"processes x{process_count(args.workers)} (read + parse)", lambda: anyio.run(processes)),
    ):
        started = time.perf_counter()
        run()
        results[name] = time.perf_counter() - started
    print(f"{len(paths):,} files in {mlruns}")
    for name, seconds in results.items():
        print(f"  {name:<36}{seconds:>8.2f} s{len(paths) / seconds:>12,.0f} files/s")


if __name__ == "__main__":
    main()
