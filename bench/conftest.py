"""Options, trees and the shared timed-run fixture of the throughput suite; the summary tables.

    python -m pytest bench --bench-size ci          # a few minutes on 2 cores
    python -m pytest bench --bench-size full        # the issue's shapes; ~15+ minutes
"""

from __future__ import annotations

import itertools
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from harness import (
    ALONE,
    BUILTIN,
    BYTECODE_MODES,
    CONTENDERS,
    ETL,
    ETL_COLD,
    ETL_NO_VERIFY,
    ETL_PG,
    ETL_MY,
    ETL_MY_NO_VERIFY,
    ETL_PG_NO_VERIFY,
    ETL_WARM,
    MERGED,
    MY_CONTENDERS,
    PG_CONTENDERS,
    REFERENCE_NAME,
    SHAPES,
    SIZES,
    SMALL_TREE,
    SQLITE_COPY,
    MyDatabase,
    PgDatabase,
    SqliteFile,
    Tree,
    bench_env,
    build_tree,
    command,
    default_tree_cache,
    prepare_bytecode,
    start_mysql_server,
    start_pg_server,
)

RESULTS = pytest.StashKey[dict]()
_databases = itertools.count()  # one new PostgreSQL database per round
GATE = pytest.StashKey[list]()
# Gate limits: target + margin, the margin above the largest (max - median) of each ratio over 5
# CI-size sessions (bench/README.md, "The CI gate"). Targets: verification at most half the load
# (default run <= 1.5x --no-verify, issue 11): measured 1.09-1.64x, limit 2.0. Not slower than the
# plain single-threaded reference: on a CI-size tree the reference's whole run is 0.7-1 s, so that
# ratio weighs process start-up and the pipeline's fixed costs (measured 1.01-2.07x), and its limit
# (2.5) catches a regression, not the target.
GATE_MAX_VS_REFERENCE = 2.5
GATE_MAX_VERIFY = 1.5 + 0.5
# Never slower than `mlflow migrate-filestore`, the tool users compare us with: measured 0.07-0.46x
# of its time, so the limit keeps a margin below the target itself.
GATE_MAX_VS_BUILTIN = 0.75
# Rows/s must not fall as a tree grows (issue 22: at x10 at least those at x1). CI compares
# issue 22's metric-heavy tree at 0.1 and 1.0 (100 k and 1 M rows), on the load phase's rows/s:
# measured 0.64-1.10 in 10 sessions on a shared 2-core machine (the two runs of a session a minute
# apart at different loads), so that limit catches only a gross fall; and on CPU seconds per row
# of the whole process tree, larger tree over smaller: 0.69-0.72 in the last 5 of them (the
# smaller tree's run pays start-up, ~0.5 CPU s, over a tenth of the rows), which load hardly
# moves. 0.85 fails a change that makes each row cost a fifth more CPU at 1 M rows than at
# 100 k.
GATE_MAX_SIZE_SLOPE = 1.25
GATE_MAX_SIZE_CPU_SLOPE = 0.85
PHASE_ORDER = ("schema", "load", "verify", "promote")
RATIOS = ((BUILTIN, ETL), (BUILTIN, ETL_NO_VERIFY), (REFERENCE_NAME, ETL_NO_VERIFY),
          (BUILTIN, ETL_PG), (BUILTIN, ETL_PG_NO_VERIFY))  # fmt: skip
# The same command into PostgreSQL or MySQL and into SQLite: > 1 means the server took longer.
TARGET_RATIOS = (("PostgreSQL", ETL_NO_VERIFY, ETL_PG_NO_VERIFY, ETL_NO_VERIFY), ("PostgreSQL", ETL, ETL_PG, ETL),
                 ("MySQL", ETL_NO_VERIFY, ETL_MY_NO_VERIFY, ETL_NO_VERIFY), ("MySQL", ETL, ETL_MY, ETL))
# Start-up on a small tree (issue 11 §3): the first run no slower than the built-in, later ones
# at most half its time.
START_RATIOS = ((ETL_COLD, BUILTIN, 1.0), (ETL_WARM, BUILTIN, 0.5))


def pytest_addoption(parser):
    group = parser.getgroup("etl-migrate bench")
    group.addoption("--bench-size", choices=sorted(SIZES), default="ci",
                    help="ci: small trees, a few minutes; full: the issue's shapes (default ci)")
    group.addoption("--bench-rounds", type=int, default=None,
                    help="timed rounds per contender (default: 2 for ci, 1 for full)")
    group.addoption("--bench-shapes", default=",".join(SHAPES),
                    help="test_throughput's trees, comma-separated, of " + ", ".join(SIZES["ci"])
                    + " (default %(default)s; metric-deep is issue 22's metric-heavy tree)")
    group.addoption("--bench-factors", default="1",
                    help="test_throughput's tree sizes as multiples of --bench-size, comma-separated "
                    "(default %(default)s; 1,10: the x1 and x10 tables of issue 22 in one session)")
    group.addoption("--bench-trees", type=Path, default=None,
                    help="cache folder for generated trees (default $ETL_BENCH_TREES or "
                    "<tmp>/etl-migrate-bench-trees); reused across sessions")
    group.addoption("--bench-seed", type=int, default=0, help="make_large_tree --seed")  # fmt: skip
    group.addoption("--bench-bytecode", choices=BYTECODE_MODES, default="compiled",
                    help="compiled: compile the environment's bytecode once before timing, as pip "
                    "does at install; none: every import compiles again, as in an environment "
                    "without bytecode run with PYTHONDONTWRITEBYTECODE=1 (default compiled)")
    group.addoption("--bench-gate", action="store_true",
                    help="fail the session when a gated ratio (measured in this session) is over "
                    "its limit; see --gate-max-vs-reference and --gate-max-verify")
    group.addoption("--gate-max-vs-reference", type=float,
                    default=float(os.environ.get("ETL_BENCH_GATE_MAX_VS_REFERENCE",
                                                 GATE_MAX_VS_REFERENCE)),
                    help="limit of (etl-migrate --no-verify) / reference wall time on trees where "
                    "both write the same rows (env ETL_BENCH_GATE_MAX_VS_REFERENCE; default "
                    "%(default)s)")
    group.addoption("--gate-max-vs-builtin", type=float,
                    default=float(os.environ.get("ETL_BENCH_GATE_MAX_VS_BUILTIN",
                                                 GATE_MAX_VS_BUILTIN)),
                    help="limit of (etl-migrate --no-verify) / migrate-filestore wall time "
                    "(env ETL_BENCH_GATE_MAX_VS_BUILTIN; default %(default)s)")
    group.addoption("--gate-max-size-slope", type=float,
                    default=float(os.environ.get("ETL_BENCH_GATE_MAX_SIZE_SLOPE", GATE_MAX_SIZE_SLOPE)),
                    help="limit of the load phase's rows/s on test_scaling_size's smaller tree over "
                    "those on the tree 10x its size (env ETL_BENCH_GATE_MAX_SIZE_SLOPE; default "
                    "%(default)s)")
    group.addoption("--gate-max-size-cpu-slope", type=float,
                    default=float(os.environ.get("ETL_BENCH_GATE_MAX_SIZE_CPU_SLOPE", GATE_MAX_SIZE_CPU_SLOPE)),
                    help="limit of CPU seconds per row on test_scaling_size's larger tree over those "
                    "on the smaller (env ETL_BENCH_GATE_MAX_SIZE_CPU_SLOPE; default %(default)s)")
    group.addoption("--gate-max-verify", type=float,
                    default=float(os.environ.get("ETL_BENCH_GATE_MAX_VERIFY", GATE_MAX_VERIFY)),
                    help="limit of etl-migrate / (etl-migrate --no-verify) wall time "
                    "(env ETL_BENCH_GATE_MAX_VERIFY; default %(default)s)")  # fmt: skip


def pytest_configure(config):
    config.addinivalue_line("markers", "postgres: migrates into the session's PostgreSQL server")
    config.addinivalue_line("markers", "mysql: migrates into the session's MariaDB server")
    config.stash[RESULTS] = {"throughput": {}, "start": {}, "workers": {}, "size": {}, "merge": {}}


@pytest.fixture(scope="session")
def bench_size(pytestconfig) -> str:
    return pytestconfig.getoption("--bench-size")


@pytest.fixture(scope="session")
def bench_rounds(pytestconfig, bench_size) -> int:
    rounds = pytestconfig.getoption("--bench-rounds")
    return max(1, rounds) if rounds else (2 if bench_size == "ci" else 1)


@pytest.fixture(scope="session")
def tree_factory(pytestconfig):
    cache = pytestconfig.getoption("--bench-trees") or default_tree_cache()
    seed = pytestconfig.getoption("--bench-seed")
    built: dict[tuple[str, float, int], Tree] = {}

    def get(shape: str, scale: float, other_seed: int = 0) -> Tree:
        """other_seed: another tree of the same shape (other ids), for merging trees."""
        key = (shape, scale, seed + other_seed)
        if key not in built:
            built[key] = build_tree(cache, shape, scale, seed + other_seed)
        return built[key]

    return get


@pytest.fixture(scope="session")
def small_tree(pytestconfig) -> Tree:
    cache = pytestconfig.getoption("--bench-trees") or default_tree_cache()
    seed = pytestconfig.getoption("--bench-seed")
    return build_tree(cache, SMALL_TREE["shape"], 1.0, seed, SMALL_TREE["args"], name="small")


@pytest.fixture(scope="session")
def bytecode(pytestconfig, tmp_path_factory) -> str:
    """The contenders' bytecode, set up once before anything is timed (see --bench-bytecode)."""
    mode = pytestconfig.getoption("--bench-bytecode")
    prepare_bytecode(mode, tmp_path_factory.mktemp("no-bytecode"))
    return mode


@pytest.fixture(scope="session")
def warm_cache(tmp_path_factory, bytecode) -> Path:
    """An etl-migrate cache folder as a first run leaves it (the schema template built)."""
    folder = tmp_path_factory.mktemp("warm-cache")
    env = {**bench_env(), "ETL_MIGRATE_CACHE_DIR": str(folder)}
    code = "from etl.sink.sqlite.schema import template_path; template_path()"
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    return folder


@pytest.fixture(scope="session")
def mysql_server():
    """One MariaDB server for the session; each round migrates into a new database on it."""
    server, reason = start_mysql_server()
    if server is None:
        pytest.skip(reason)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_server():
    """One PostgreSQL server for the session; each round migrates into a new database on it."""
    server, reason = start_pg_server()
    if server is None:
        pytest.skip(reason)
    yield server
    server.stop()


class KeptDatabases:
    """The last database `etl-migrate --no-verify` made of each tree, for SQLite's own copy of
    it; each is deleted once copied (an x10 database is GBs), the rest at the session's end."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.paths: dict[str, Path] = {}

    def get(self, label: str) -> Path | None:
        return self.paths.get(label)

    def keep(self, label: str, path: Path) -> None:
        self.drop(label)
        kept = self.folder / f"{len(self.paths)}-{path.name}"
        path.rename(kept)
        self.paths[label] = kept

    def drop(self, label: str) -> None:
        path = self.paths.pop(label, None)
        if path is not None:
            path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def kept(tmp_path_factory):
    databases = KeptDatabases(tmp_path_factory.mktemp("kept"))
    yield databases
    for label in list(databases.paths):
        databases.drop(label)


@pytest.fixture
def measure(benchmark, tmp_path, bench_rounds, pytestconfig, request, bytecode, kept):
    """measure(contender, tree, table=, key=): time fresh runs, record them, check exit 0."""
    results = pytestconfig.stash[RESULTS]
    # Started only by a session that benches PostgreSQL (skips the test when none is installed).
    server = request.getfixturevalue("pg_server") if request.node.get_closest_marker("postgres") else None
    if request.node.get_closest_marker("mysql"):
        server = request.getfixturevalue("mysql_server")

    def run(contender: str, tree: Tree, *, table: str, key, workers: int | None = None,
            rounds: int | None = None, cache_dir: Path | str | None = None) -> dict:  # fmt: skip
        """cache_dir: etl-migrate's cache folder; "empty" gives each round a new empty one."""
        from harness import RunResult, run_once

        runs: list[RunResult] = []
        rows: dict[str, int] = {}
        numbers = itertools.count()
        rounds = rounds or bench_rounds
        # SQLite's own copy needs the database `etl-migrate --no-verify` made of this tree.
        source_db = kept.get(tree.label)
        if contender == SQLITE_COPY and source_db is None:
            pytest.skip(f"{SQLITE_COPY} copies the database {ETL_NO_VERIFY} made of the same tree in "
                        "this session: run that case too")  # fmt: skip

        def setup():
            number = next(numbers)
            workdir = tmp_path / f"round{number}"
            workdir.mkdir()
            report = workdir / "report.json"
            if contender in PG_CONTENDERS:
                db = PgDatabase(server, f"bench_{os.getpid()}_{next(_databases)}")
            elif contender in MY_CONTENDERS:
                db = MyDatabase(server, f"bench_{os.getpid()}_{next(_databases)}")
            else:
                db = SqliteFile(workdir / "target.db")
            cache = cache_dir
            if cache == "empty":
                cache = workdir / "cache"
                cache.mkdir()
            return (command(contender, tree, db.uri, report, workers, source_db), db, report, workdir, cache), {}

        def target(cmd, db, report, workdir, cache):
            runs.append(run_once(cmd, report, workdir, cache))

        def teardown(cmd, db, report, workdir, cache):  # untimed: count rows written, free disk
            if runs[-1].exit_code == 0 and not rows:
                rows.update(db.count_rows())
            if (contender == ETL_NO_VERIFY and table == "throughput" and len(runs) == rounds
                    and runs[-1].exit_code == 0):  # fmt: skip
                kept.keep(tree.label, db.path)
            db.remove()

        scaling = table not in ("throughput", "start")  # the merge case: one table of its runs
        benchmark.group = f"scaling {table}" if scaling else f"{table}: {tree.label}"
        benchmark.pedantic(target, setup=setup, teardown=teardown, rounds=rounds,
                           iterations=1, warmup_rounds=0)  # fmt: skip
        if contender == SQLITE_COPY:
            kept.drop(tree.label)

        failed = [r for r in runs if r.exit_code != 0]
        seconds = statistics.median(r.seconds for r in runs)
        total = sum(rows.values())
        seen = {p for r in runs for p in r.phases}
        phase_names = [p for p in PHASE_ORDER if p in seen] + sorted(seen - set(PHASE_ORDER))
        record = {
            "contender": contender,
            "tree": tree.label,
            "runs_in_tree": tree.runs,
            "workers": workers,
            "rounds": len(runs),
            "wall_seconds": [round(r.seconds, 3) for r in runs],
            "median_seconds": round(seconds, 3),
            "cpu_seconds": [round(r.cpu_seconds, 3) for r in runs],
            "median_cpu_seconds": round(statistics.median(r.cpu_seconds for r in runs), 3),
            "rows": total,
            "rows_by_table": rows,
            "rows_per_s": round(total / seconds, 1),
            "files": tree.files,
            "files_per_s": round(tree.files / seconds, 1),
            "peak_rss_mib": round(max(r.peak_rss_mib for r in runs), 1),
            "phases": {p: round(statistics.median(r.phases.get(p, 0.0) for r in runs), 3)
                       for p in phase_names},  # fmt: skip
            "exit_codes": [r.exit_code for r in runs],
            "bytecode": bytecode,
        }
        if "load" in record["phases"]:
            record["load_seconds"] = record["phases"]["load"]
        benchmark.extra_info.update(record)
        results[table].setdefault("" if scaling else tree.label, {})[key] = record
        assert not failed, (
            f"{contender} exited {failed[0].exit_code} on {tree.label}:\n{failed[0].stderr_tail}"
        )
        return record

    return run


# --------------------------------------------------------------------------------------------
# the summary printed at the end of the session


def _fmt_row(name, rec) -> str:
    phases = " ".join(f"{k} {v:.2f}" for k, v in rec["phases"].items())
    return (f"  {name:<36}{rec['median_seconds']:>9.2f}{rec['median_cpu_seconds']:>8.2f}"
            f"{rec['rows_per_s']:>12,.0f}"
            f"{rec['files_per_s']:>11,.0f}{rec['peak_rss_mib']:>10,.0f}   {phases}")  # fmt: skip


HEADER = f"  {'':<36}{'seconds':>9}{'CPU s':>8}{'rows/s':>12}{'files/s':>11}{'RSS MB':>10}   phases (s)"


def _ratio(results: dict, num: str, den: str, field: str = "median_seconds") -> str:
    if num in results and den in results and results[den].get(field, 0) > 0 and field in results[num]:
        return f"{results[num][field] / results[den][field]:.2f}x"
    return "n/a"


def summary_lines(config) -> list[str]:
    results = config.stash[RESULTS]
    size = config.getoption("--bench-size")
    bytecode = config.getoption("--bench-bytecode")
    lines = []
    if results["throughput"]:
        lines.append(f"Throughput, --bench-size {size}, bytecode {bytecode}: median wall seconds, "
                     "rows/s and files/s from them, peak RSS (MB) of the whole process tree")  # fmt: skip
        for label, recs in results["throughput"].items():
            any_rec = next(iter(recs.values()))
            lines.append(f"{label}: {any_rec['runs_in_tree']:,} runs, {any_rec['files']:,} files, "
                         f"{any_rec['rows']:,} rows, {any_rec['rounds']} round(s)")  # fmt: skip
            lines.append(HEADER)
            lines += [_fmt_row(c, recs[c]) for c in (*CONTENDERS, *PG_CONTENDERS, *MY_CONTENDERS) if c in recs]
            if len({r["rows"] for r in recs.values() if r["rows"]}) > 1:
                counts = ", ".join(f"{c} {r['rows']:,}" for c, r in recs.items())
                lines.append(f"  WARNING: contenders wrote different row counts: {counts}")
            for num, den in RATIOS:
                if num in recs and den in recs:
                    lines.append(f"  ratio {num + ' / ' + den + ':':<56}{_ratio(recs, num, den):>8}")
            for server_name, command_name, num, den in TARGET_RATIOS:
                if num in recs and den in recs:
                    label = f"{server_name} / SQLite, {command_name}:"
                    load = _ratio(recs, num, den, "load_seconds")
                    lines.append(f"  ratio {label:<56}{_ratio(recs, num, den):>8}   (load phase {load})")
            copy = recs.get(SQLITE_COPY, {})
            if ETL_NO_VERIFY in recs and copy.get("phases", {}).get("copy"):
                ceiling = copy["rows"] / copy["phases"]["copy"]
                label = f"rows/s, {ETL_NO_VERIFY} / {SQLITE_COPY}:"
                lines.append(f"  ratio {label:<56}{recs[ETL_NO_VERIFY]['rows_per_s'] / ceiling:>7.2f}x"
                             f"   ({ceiling:,.0f} rows/s: the copy statements alone)")  # fmt: skip
        lines.append("  (a ratio > 1 means etl-migrate took less time than the other contender; "
                     "PostgreSQL or MySQL / SQLite > 1 means the same command took longer into that server)")  # fmt: skip
        lines += _slopes(results["throughput"])
    for label, recs in results["start"].items():
        any_rec = next(iter(recs.values()))
        lines.append(f"Start-up, {label}: {any_rec['runs_in_tree']:,} runs, {any_rec['files']:,} "
                     f"files, {any_rec['rows']:,} rows; cold = empty ETL_MIGRATE_CACHE_DIR; "
                     f"bytecode {bytecode}")  # fmt: skip
        lines.append(HEADER)
        lines += [_fmt_row(c, recs[c]) for c in (ETL_COLD, ETL_WARM, BUILTIN) if c in recs]
        for num, den, target in START_RATIOS:
            text, cpu = _ratio(recs, num, den), _ratio(recs, num, den, "median_cpu_seconds")
            lines.append(f"  ratio {num + ' / ' + den + ':':<46}{text:>8}   (target <= {target:g}x;"
                         f" CPU seconds {cpu})")  # fmt: skip
    for recs in results["merge"].values():
        lines.append(f"Merge, {recs[ALONE[0]]['tree'] if ALONE[0] in recs else ''}: two trees (other seeds) "
                     f"into one database in one run, beside each alone; {ETL}")  # fmt: skip
        lines.append(HEADER)
        lines += [_fmt_row(str(key), rec) for key, rec in recs.items()]
        if {MERGED, *ALONE} <= recs.keys():
            both = recs[MERGED]["median_seconds"]
            alone = sum(recs[k]["median_seconds"] for k in ALONE)
            cpu = sum(recs[k]["median_cpu_seconds"] for k in ALONE)
            lines.append(f"  ratio {MERGED} / sum of the two alone: {both / alone:.2f}x "
                         f"(CPU seconds {recs[MERGED]['median_cpu_seconds'] / cpu:.2f}x; <= 1: the merge "
                         "costs no more than migrating each alone)")  # fmt: skip
    for table, title in (("workers", "--workers N"), ("size", "tree size")):
        for _, recs in results[table].items():
            lines.append(f"Scaling, {title}: {ETL_NO_VERIFY}")
            lines.append(HEADER)
            lines += [_fmt_row(str(key), rec) for key, rec in recs.items()]
            if table == "size" and len(recs) == 2:
                small, large = recs.values()
                lines.append(f"  rows/s, larger / smaller tree: {large['rows_per_s'] / small['rows_per_s']:.2f}x "
                             f"(load phase {_load_rate(large) / _load_rate(small):.2f}x)")  # fmt: skip
    return lines


def _load_rate(rec: dict) -> float:
    return rec["rows"] / rec["load_seconds"] if rec.get("load_seconds") else 0.0


def _slopes(throughput: dict) -> list[str]:
    """Rows/s of each contender on the larger trees of a shape over those on its smallest, when
    a session ran one shape at several sizes (--bench-factors)."""
    by_shape: dict[str, dict[float, dict]] = {}
    for label, recs in throughput.items():
        shape, scale = label.rsplit(" x", 1)
        by_shape.setdefault(shape, {})[float(scale)] = recs
    lines = []
    for shape, sizes in by_shape.items():
        if len(sizes) < 2:
            continue
        smallest = min(sizes)
        for scale in sorted(sizes)[1:]:
            lines.append(f"Rows/s, {shape} x{scale:g} / x{smallest:g} (whole run; load phase):")
            for contender, rec in sizes[scale].items():
                base = sizes[smallest].get(contender)
                if base and base["rows_per_s"] and contender != SQLITE_COPY:
                    load = (f"{_load_rate(rec) / _load_rate(base):.2f}x" if _load_rate(base) and _load_rate(rec)
                            else "n/a")  # fmt: skip
                    lines.append(f"  {contender:<56}{rec['rows_per_s'] / base['rows_per_s']:>7.2f}x   {load}")
    return lines


# --------------------------------------------------------------------------------------------
# the gate: ratios of median wall times measured in this session, so machine drift cancels


def gate_checks(config) -> list[dict]:
    """One check per gated ratio and tree: {tree, ratio, value, limit, ok} (computed once)."""
    if GATE in config.stash:
        return config.stash[GATE]
    checks = []
    limits = {(ETL_NO_VERIFY, BUILTIN): config.getoption("--gate-max-vs-builtin"),
              (ETL_NO_VERIFY, REFERENCE_NAME): config.getoption("--gate-max-vs-reference"),
              (ETL, ETL_NO_VERIFY): config.getoption("--gate-max-verify")}  # fmt: skip
    for label, recs in config.stash[RESULTS]["throughput"].items():
        for (num, den), limit in limits.items():
            if num not in recs or den not in recs or recs[den]["median_seconds"] <= 0:
                continue
            if any(code != 0 for c in (num, den) for code in recs[c]["exit_codes"]):
                continue  # a failed run already fails the session; its time means nothing
            # The reference covers fewer entity kinds (no traces, datasets, logged models):
            # where it writes fewer rows, beating it proves nothing, so that ratio is not gated.
            if den == REFERENCE_NAME and recs[den]["rows"] != recs[num]["rows"]:
                continue
            value = recs[num]["median_seconds"] / recs[den]["median_seconds"]
            checks.append({"tree": label, "ratio": f"{num} / {den}", "value": round(value, 3),
                           "limit": limit, "ok": value <= limit})  # fmt: skip
    for recs in config.stash[RESULTS]["size"].values():
        if len(recs) != 2 or any(code != 0 for rec in recs.values() for code in rec["exit_codes"]):
            continue
        small, large = recs.values()
        if _load_rate(small) and _load_rate(large):
            # Rows/s of the load phase (start-up and promotion are fixed costs a small tree
            # does not amortise): the smaller tree's over the larger's, <= 1 when rows/s hold.
            value = _load_rate(small) / _load_rate(large)
            limit = config.getoption("--gate-max-size-slope")
            checks.append({"tree": f"{small['tree']}, {large['tree'].rsplit(' ', 1)[-1]}",
                           "ratio": "load rows/s, smaller tree / larger",
                           "value": round(value, 3), "limit": limit, "ok": value <= limit})  # fmt: skip
        if small["rows"] and large["rows"] and small["median_cpu_seconds"]:
            # The same slope on CPU seconds of the whole process tree: wall time on a shared
            # machine moves with whatever else runs in the minute between the two runs.
            value = (large["median_cpu_seconds"] / large["rows"]) / (small["median_cpu_seconds"] / small["rows"])
            limit = config.getoption("--gate-max-size-cpu-slope")
            checks.append({"tree": f"{small['tree']}, {large['tree'].rsplit(' ', 1)[-1]}",
                           "ratio": "CPU s per row, larger tree / smaller",
                           "value": round(value, 3), "limit": limit, "ok": value <= limit})  # fmt: skip
    config.stash[GATE] = checks
    return checks


def pytest_benchmark_update_json(config, benchmarks, output_json):
    output_json["etl_migrate_gate"] = {"enabled": config.getoption("--bench-gate"),
                                       "checks": gate_checks(config)}  # fmt: skip


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if config.getoption("--bench-gate") and exitstatus == pytest.ExitCode.OK:
        if not all(check["ok"] for check in gate_checks(config)):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config):
    lines = summary_lines(config)
    if lines:
        terminalreporter.write_sep("=", "etl-migrate benchmark summary")
        for line in lines:
            terminalreporter.write_line(line)
    checks = gate_checks(config)
    if checks:
        enabled = config.getoption("--bench-gate")
        terminalreporter.write_sep("=", "etl-migrate gate" + ("" if enabled else " (not enforced)"))
        for c in checks:
            verdict = "ok" if c["ok"] else "OVER THE LIMIT"
            terminalreporter.write_line(f"  {c['tree']:<24}{c['ratio']:<48}{c['value']:>6.2f}x"
                                        f"  limit {c['limit']:.2f}x  {verdict}")  # fmt: skip
        if enabled and not all(c["ok"] for c in checks):
            terminalreporter.write_line("The gate fails this session (bench/README.md, 'The CI "
                                        "gate': limits, overrides, ETL_BENCH_GATE=0).", red=True)
