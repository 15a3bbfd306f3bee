"""What promotion costs on a large staged database: a link (new target) against the online backup
into an existing target (what a target MLflow created, maybe open in a server, gets).

    python bench/promotion_cost.py --size-mb 1024 --folder /var/tmp/promo

Builds a staged database of about --size-mb in MLflow's own schema (metric rows made in SQL, the
table that dominates large trees), then promotes copies of it through StagingArea.promote:
- into an absent target (hard link);
- into a target MLflow initialized (schema + Default experiment): SQLite's backup API, one page
  per step with the guard that re-checks the target, exactly as a run does;
and, for scale, the same backup without our guard (Connection.backup, all pages in one step) and
a plain file copy. Prints seconds and MB/s for each and the ratios to the file copy, all measured
in this one run (absolute times drift on shared machines; ratios hold).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import time
from pathlib import Path

from etl.sink.sqlite.schema import create_schema
from etl.sink.sqlite.staging import StagingArea

ROWS_PER_ROUND = 1_000_000


def build_staged(path: Path, size_mb: int) -> None:
    create_schema(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("INSERT INTO experiments (experiment_id, name, lifecycle_stage) VALUES (1, 'bench', 'active')")
    conn.execute("INSERT INTO runs (run_uuid, experiment_id, lifecycle_stage, status) "
                 "VALUES ('r0', 1, 'active', 'FINISHED')")
    done = 0
    while path.stat().st_size < size_mb * 1024 * 1024:
        conn.execute(
            "INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) "
            "WITH RECURSIVE c(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM c LIMIT ?) "
            "SELECT 'metric_' || (i % 10), i * 0.5, 1700000000000 + i, 'r0', i / 10, 0 FROM c",
            (done, ROWS_PER_ROUND),
        )
        done += ROWS_PER_ROUND
    conn.close()


def mlflow_initialized(path: Path) -> None:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(f"sqlite:///{path}", str(path.parent / "artifacts"))
    store.engine.dispose()


def timed(func) -> float:
    started = time.monotonic()
    func()
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--folder", type=Path, required=True, help="an empty folder on the disk to measure")
    args = parser.parse_args()
    folder = args.folder.absolute()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_TRACKING_URI", (folder / "stray-mlruns").as_uri())

    built = folder / "built.db"
    print(f"building a staged database of ~{args.size_mb} MB in {folder} ...", flush=True)
    build_staged(built, args.size_mb)
    size = built.stat().st_size
    rows = sqlite3.connect(built).execute("SELECT COUNT(*) FROM metrics").fetchone()[0]
    print(f"staged: {size / 2**20:,.0f} MB, {rows:,} metric rows")

    def promote_case(name: str, existing: bool) -> float:
        target = folder / f"{name}.db"
        if existing:
            mlflow_initialized(target)
        area = StagingArea(target).__enter__()
        try:
            shutil.copyfile(built, area.staging)
            os.sync()
            return timed(lambda: area.promote(verified=True))
        finally:
            area.__exit__(None, None, None)

    def raw_backup() -> float:
        target = folder / "raw-backup.db"
        mlflow_initialized(target)
        source = sqlite3.connect(f"file:{built}?mode=ro", uri=True)
        dest = sqlite3.connect(target)
        try:
            return timed(lambda: source.backup(dest))
        finally:
            source.close()
            dest.close()

    def file_copy() -> float:
        def copy():
            shutil.copyfile(built, folder / "copy.db")
            fd = os.open(folder / "copy.db", os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        return timed(copy)

    results = {
        "file copy + fsync (shutil.copyfile)": file_copy(),
        "promote, absent target (hard link)": promote_case("absent", existing=False),
        "promote into an MLflow-initialized target (backup API + guard)": promote_case("existing", existing=True),
        "Connection.backup alone, all pages in one step": raw_backup(),
    }
    base = results["file copy + fsync (shutil.copyfile)"]
    print("\n| how | seconds | MB/s | x file copy |\n| --- | ---: | ---: | ---: |")
    for name, seconds in results.items():
        rate = size / 2**20 / seconds if seconds else float("inf")
        print(f"| {name} | {seconds:.3f} | {rate:,.0f} | {seconds / base:.2f} |")
    for entry in folder.iterdir():
        if entry.is_file():
            entry.unlink()


if __name__ == "__main__":
    main()
