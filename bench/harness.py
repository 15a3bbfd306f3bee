"""What the benchmarks share: synthetic trees, the contenders' command lines, one timed run.

Every contender runs as a subprocess of this interpreter (the dev venv), into a target file that
does not exist yet, while ``peak_rss.PeakRSS`` samples the memory of its whole process tree.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from peak_rss import PeakRSS

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
MAKE_TREE = REPO / "scripts" / "make_large_tree.py"
REFERENCE = BENCH / "reference_migrate.py"
SQLITE_COPY_SCRIPT = BENCH / "sqlite_copy.py"

# (shape, make_large_tree --scale) per --bench-size. "full" is the shapes:
# metric-heavy 2,000 runs x 10 params x 5 tags x 10 metric keys x 50-100 steps;
# wide 10,000 runs x 10 params x 10 tags x 5 metrics x 1 step;
# trace-heavy like MLflow's own fs2db generator at "full": 1,200 runs, 600 traces (half in
# MLflow 2.x's layout), 12,000 assessments, 200 logged models with 50-step metric histories.
SIZES = {
    "ci": {"metric-heavy": 0.1, "wide": 0.1, "trace-heavy": 0.1, "metric-deep": 0.1},
    "full": {"metric-heavy": 1.0, "wide": 1.0, "trace-heavy": 1.0, "metric-deep": 1.0},
}
SHAPES = ("metric-heavy", "wide", "trace-heavy")
# Shapes that are a make_large_tree preset with other arguments. metric-deep is issue 22's
# metric-heavy tree: 20 experiments, 10 metric keys x 250 steps per run; 400 runs at x1 (1.0 M
# rows, 10 k files), 4,000 at x10 (10.1 M rows, 104 k files, 370 MB).
TREE_ARGS = {
    "metric-deep": ("metric-heavy", ("--experiments", "20", "--runs", "400", "--min-steps", "250",
                                     "--max-steps", "250")),
}  # fmt: skip

ETL = "etl-migrate"
ETL_NO_VERIFY = "etl-migrate --no-verify"
BUILTIN = "migrate-filestore"
REFERENCE_NAME = "reference"
# SQLite's own INSERT INTO t SELECT * FROM attached.t of every table of the database
# `etl-migrate --no-verify` made of the same tree in the session, into an empty copy of MLflow's
# schema (bench/sqlite_copy.py): the ceiling of issue 22.
SQLITE_COPY = "SQLite INSERT ... SELECT"
CONTENDERS = (ETL, ETL_NO_VERIFY, BUILTIN, REFERENCE_NAME, SQLITE_COPY)
# The same commands into a new database on a PostgreSQL server the session starts.
ETL_PG = "etl-migrate, PostgreSQL"
ETL_PG_NO_VERIFY = "etl-migrate --no-verify, PostgreSQL"
PG_CONTENDERS = (ETL_PG, ETL_PG_NO_VERIFY)
# And into a new database on a MariaDB server the session starts.
ETL_MY = "etl-migrate, MySQL"
ETL_MY_NO_VERIFY = "etl-migrate --no-verify, MySQL"
MY_CONTENDERS = (ETL_MY, ETL_MY_NO_VERIFY)
# The merge case (test_throughput.py::test_merge): two trees into one database, and each alone.
MERGED = "both trees, one run"
ALONE = ("first tree alone", "second tree alone")
# The first run on a machine (no cached schema: MLflow's migrations run) and every later one.
ETL_COLD = "etl-migrate, cold cache"
ETL_WARM = "etl-migrate, warm cache"
# A small tree with every entity kind, as most users have: make_large_tree arguments.
SMALL_TREE = dict(shape="tiny", args=(
    "--experiments", "3", "--runs", "36", "--datasets", "2", "--inputs", "2", "--traces", "3",
    "--assessments", "10", "--v2-trace-fraction", "0.34", "--logged-models", "2",
    "--model-metric-steps", "5", "--registered-models", "2", "--versions-per-model", "2",
    "--deleted-experiment-fraction", "0.34", "--deleted-run-fraction", "0.1",
))  # fmt: skip

# Rows MLflow's migrations put in an empty database (alembic_version, workspaces): not migrated.
_template_counts: dict[str, int] | None = None


def default_tree_cache() -> Path:
    explicit = os.environ.get("ETL_BENCH_TREES")
    return Path(explicit) if explicit else Path(tempfile.gettempdir()) / "etl-migrate-bench-trees"


def bench_env() -> dict[str, str]:
    env = dict(os.environ)
    env["MLFLOW_ALLOW_FILE_STORE"] = "true"
    env.pop("MLFLOW_TRACKING_URI", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(_bytecode_env)
    return env


# --------------------------------------------------------------------------------------------
# bytecode: both contenders run this interpreter and import the same MLflow, so both gain or lose
# alike; but a whole small-tree run is mostly imports, so the choice moves every start-up figure.

BYTECODE_MODES = ("compiled", "none")
_bytecode_env: dict[str, str] = {}


def prepare_bytecode(mode: str, scratch: Path) -> None:
    """compiled: compile the environment's modules once before timing, as `pip install` does.
    none: every import compiles its module again, as in an environment installed without
    bytecode (uv's default) and run with PYTHONDONTWRITEBYTECODE=1: Python looks for bytecode
    only under an empty PYTHONPYCACHEPREFIX and writes none there."""
    _bytecode_env.clear()
    if mode == "none":
        _bytecode_env.update(PYTHONPYCACHEPREFIX=str(scratch), PYTHONDONTWRITEBYTECODE="1")
        return
    import compileall
    import sysconfig

    folders = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")} | {str(REPO / "etl")}
    for folder in sorted(folders):
        # A few files in site-packages are not Python 3 (templates, test data): pip leaves them
        # uncompiled too, so a failure here is no error. Up to date files are only checked.
        compileall.compile_dir(folder, quiet=2, workers=os.cpu_count() or 1)


# --------------------------------------------------------------------------------------------
# trees


@dataclass(frozen=True)
class Tree:
    shape: str
    scale: float
    mlruns: Path
    files: int
    summary: dict = field(hash=False, compare=False)
    # More trees migrated with this one into one database (--source given several times).
    more: tuple[Path, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.shape} x{self.scale:g}" + (f", {1 + len(self.more)} sources" if self.more else "")

    @property
    def runs(self) -> int:
        return self.summary["counts"]["runs"]


def _generator_digest() -> str:
    """A changed generator means a new tree, not a stale cached one."""
    return hashlib.sha256(MAKE_TREE.read_bytes()).hexdigest()[:10]


def count_files(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


def warm_page_cache(root: Path) -> None:
    """Read every file once, so the first contender does not pay for a cold cache alone."""
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                f.read()


def merged(trees: list[Tree]) -> Tree:
    """Several trees as one contender's source: migrated into one database in one run."""
    first = trees[0]
    summary = {**first.summary, "counts": {"runs": sum(t.runs for t in trees)}}
    return Tree(first.shape, first.scale, first.mlruns, sum(t.files for t in trees), summary,
                tuple(t.mlruns for t in trees[1:]))


def build_tree(cache: Path, shape: str, scale: float, seed: int = 0,
               args: tuple[str, ...] = (), name: str | None = None) -> Tree:  # fmt: skip
    """The tree for (shape, scale, seed, args), generated once and then reused from the cache.
    A shape of TREE_ARGS is its preset with its arguments, named after the shape."""
    if shape in TREE_ARGS and not args:
        name = name or shape
        shape, args = TREE_ARGS[shape]
    folder = cache / f"{name or shape}-x{scale:g}-seed{seed}-{_generator_digest()}"
    mlruns = folder / "mlruns"
    done = folder / "summary.json"
    if not done.is_file():
        if folder.exists():
            shutil.rmtree(folder)  # a half-written tree from an interrupted session
        folder.mkdir(parents=True)
        cmd = [sys.executable, str(MAKE_TREE), "--output", str(mlruns), "--shape", shape,
               "--scale", str(scale), "--seed", str(seed), *args]  # fmt: skip
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        summary = json.loads(out)
        summary["files_counted"] = count_files(mlruns)
        done.write_text(json.dumps(summary, indent=2))
    summary = json.loads(done.read_text())
    warm_page_cache(mlruns)
    return Tree(name or shape, scale, mlruns, summary["files_counted"], summary)


# --------------------------------------------------------------------------------------------
# contenders


def command(contender: str, tree: Tree, uri: str, report: Path, workers: int | None = None,
            source_db: Path | None = None):  # fmt: skip
    if contender in (ETL, ETL_NO_VERIFY, ETL_COLD, ETL_WARM, *PG_CONTENDERS, *MY_CONTENDERS):
        sources = [arg for mlruns in (tree.mlruns, *tree.more) for arg in ("--source", str(mlruns))]
        cmd = [sys.executable, "-m", "etl", *sources, "--target", uri,
               "--report", str(report), "--log-format", "json"]  # fmt: skip
        if contender in (ETL_NO_VERIFY, ETL_PG_NO_VERIFY, ETL_MY_NO_VERIFY):
            cmd.append("--no-verify")
        if workers is not None:
            cmd += ["--workers", str(workers)]
        return cmd
    if contender == BUILTIN:
        return [sys.executable, "-m", "mlflow", "migrate-filestore",
                "--source", str(tree.mlruns), "--target", uri]  # fmt: skip
    if contender == REFERENCE_NAME:
        return [sys.executable, str(REFERENCE), "--source", str(tree.mlruns), "--target", uri]
    if contender == SQLITE_COPY:
        return [sys.executable, str(SQLITE_COPY_SCRIPT), "--source-db", str(source_db), "--target", uri,
                "--report", str(report)]  # fmt: skip
    raise ValueError(contender)


@dataclass
class RunResult:
    seconds: float
    cpu_seconds: float
    peak_rss_mib: float
    exit_code: int
    phases: dict[str, float]
    stderr_tail: str


def run_once(cmd: list[str], report: Path, workdir: Path,
             cache_dir: Path | None = None) -> RunResult:  # fmt: skip
    """One timed subprocess run; output goes to files (a full pipe must not stall the child).
    cache_dir: etl-migrate's cache folder (ETL_MIGRATE_CACHE_DIR); default: the user's own."""
    env = bench_env()
    if cache_dir is not None:
        env["ETL_MIGRATE_CACHE_DIR"] = str(cache_dir)
    with open(workdir / "stdout.log", "wb") as out, open(workdir / "stderr.log", "wb") as err:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                cwd=workdir, env=env)  # fmt: skip
        with PeakRSS(proc.pid) as peak:
            code = proc.wait()
        seconds = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU of the child and every descendant it waited for (worker processes): on a busy machine
    # it moves far less than wall time, and it is what the run costs the machine.
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    phases = {}
    if report.is_file():
        phases = json.loads(report.read_text()).get("phases") or {}
    tail = (workdir / "stderr.log").read_text(errors="replace")[-3000:]
    return RunResult(seconds, cpu, peak.max_mib, code, phases, tail)


# --------------------------------------------------------------------------------------------
# targets: one new, empty target per round


class SqliteFile:
    def __init__(self, path: Path):
        self.path = path
        self.uri = f"sqlite:///{path}"

    def count_rows(self) -> dict[str, int]:
        return written_rows(_table_counts(self.path))

    def remove(self) -> None:
        for path in self.path.parent.glob(self.path.name + "*"):
            path.unlink(missing_ok=True)


class PgDatabase:
    """A new database on the session's PostgreSQL server (tests/pg_server.py)."""

    def __init__(self, server, name: str):
        self.server = server
        self.name = name
        self.uri = server.create_database(name)

    def count_rows(self) -> dict[str, int]:
        with self.server.connect(self.name) as conn:
            tables = [r[0] for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]
            return written_rows({t: conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables})

    def remove(self) -> None:
        self.server.drop_database(self.name)


def start_pg_server():
    """A PostgreSQL server for the session, with PostgreSQL's default durability (fsync at
    commit, as a user's server runs), or a skip reason when no server binaries are installed."""
    sys.path.insert(0, str(REPO))
    from tests.pg_server import bin_dir, start_server

    if bin_dir() is None:
        return None, ("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb or initdb "
                      "on PATH): apt-get install postgresql to bench the PostgreSQL target")
    return start_server(durable=True), None


class MyDatabase:
    """A new database on the session's MariaDB server (tests/mysql_server.py)."""

    def __init__(self, server, name: str):
        self.server = server
        self.name = name
        self.uri = server.create_database(name)

    def count_rows(self) -> dict[str, int]:
        tables = [r[0] for r in self.server.sql(f"SHOW FULL TABLES FROM `{self.name}` WHERE Table_type = 'BASE TABLE'")]
        return written_rows({t: self.server.sql(f"SELECT COUNT(*) FROM `{self.name}`.`{t}`")[0][0] for t in tables})

    def remove(self) -> None:
        self.server.drop_database(self.name)


def start_mysql_server():
    """A MariaDB server for the session, with InnoDB's default durability (flush at commit, as
    a user's server runs), or a skip reason when no server binaries are installed."""
    sys.path.insert(0, str(REPO))
    from tests.mysql_server import binaries, start_server

    if binaries() is None:
        return None, ("no MariaDB server binaries (/usr/sbin/mariadbd, mariadb-install-db): "
                      "apt-get install mariadb-server to bench the MySQL target")
    return start_server(durable=True), None


def written_rows(counts: dict[str, int]) -> dict[str, int]:
    """Rows per table that the migration wrote (MLflow's own seed rows left out)."""
    global _template_counts
    if _template_counts is None:
        from etl.sink.sqlite.schema import template_path

        _template_counts = _table_counts(template_path())
    written = {t: n - _template_counts.get(t, 0) for t, n in counts.items()}
    return {t: n for t, n in written.items() if n}


def _table_counts(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}
    finally:
        conn.close()
