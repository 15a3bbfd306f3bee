"""Options, trees and the shared timed-run fixture of the throughput suite; the summary tables.

    python -m pytest bench --bench-size ci          # a few minutes on 2 cores
    python -m pytest bench --bench-size full        # the issue's shapes; ~15+ minutes
"""

from __future__ import annotations

import itertools
import statistics
from pathlib import Path

import pytest

from harness import (
    BUILTIN,
    CONTENDERS,
    ETL,
    ETL_NO_VERIFY,
    REFERENCE_NAME,
    SIZES,
    Tree,
    build_tree,
    command,
    count_rows,
    default_tree_cache,
    remove_db,
)

RESULTS = pytest.StashKey[dict]()
PHASE_ORDER = ("schema", "load", "verify", "promote")
RATIOS = ((BUILTIN, ETL), (BUILTIN, ETL_NO_VERIFY), (REFERENCE_NAME, ETL_NO_VERIFY))


def pytest_addoption(parser):
    group = parser.getgroup("etl-migrate bench")
    group.addoption("--bench-size", choices=sorted(SIZES), default="ci",
                    help="ci: small trees, a few minutes; full: the issue's shapes (default ci)")
    group.addoption("--bench-rounds", type=int, default=None,
                    help="timed rounds per contender (default: 2 for ci, 1 for full)")
    group.addoption("--bench-x10", action="store_true",
                    help="run the x10 tree-size scaling case under --bench-size ci too (slow)")
    group.addoption("--bench-trees", type=Path, default=None,
                    help="cache folder for generated trees (default $ETL_BENCH_TREES or "
                    "<tmp>/etl-migrate-bench-trees); reused across sessions")
    group.addoption("--bench-seed", type=int, default=0, help="make_large_tree --seed")  # fmt: skip


def pytest_configure(config):
    config.stash[RESULTS] = {"throughput": {}, "workers": {}, "size": {}}


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
    built: dict[tuple[str, float], Tree] = {}

    def get(shape: str, scale: float) -> Tree:
        if (shape, scale) not in built:
            built[(shape, scale)] = build_tree(cache, shape, scale, seed)
        return built[(shape, scale)]

    return get


@pytest.fixture
def measure(benchmark, tmp_path, bench_rounds, pytestconfig):
    """measure(contender, tree, table=, key=): time fresh runs, record them, check exit 0."""
    results = pytestconfig.stash[RESULTS]

    def run(contender: str, tree: Tree, *, table: str, key, workers: int | None = None,
            rounds: int | None = None) -> dict:  # fmt: skip
        from harness import RunResult, run_once

        runs: list[RunResult] = []
        rows: dict[str, int] = {}
        numbers = itertools.count()

        def setup():
            workdir = tmp_path / f"round{next(numbers)}"
            workdir.mkdir()
            db, report = workdir / "target.db", workdir / "report.json"
            return (command(contender, tree, db, report, workers), db, report, workdir), {}

        def target(cmd, db, report, workdir):
            runs.append(run_once(cmd, db, report, workdir))

        def teardown(cmd, db, report, workdir):  # untimed: count the rows written, free the disk
            if runs[-1].exit_code == 0 and not rows:
                rows.update(count_rows(db))
            remove_db(db)

        scaling = table != "throughput"
        benchmark.group = f"scaling {table}" if scaling else f"throughput: {tree.label}"
        benchmark.pedantic(target, setup=setup, teardown=teardown, rounds=rounds or bench_rounds,
                           iterations=1, warmup_rounds=0)  # fmt: skip

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
            "rows": total,
            "rows_by_table": rows,
            "rows_per_s": round(total / seconds, 1),
            "files": tree.files,
            "files_per_s": round(tree.files / seconds, 1),
            "peak_rss_mib": round(max(r.peak_rss_mib for r in runs), 1),
            "phases": {p: round(statistics.median(r.phases.get(p, 0.0) for r in runs), 3)
                       for p in phase_names},  # fmt: skip
            "exit_codes": [r.exit_code for r in runs],
        }
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
    return (f"  {name:<30}{rec['median_seconds']:>9.2f}{rec['rows_per_s']:>12,.0f}"
            f"{rec['files_per_s']:>11,.0f}{rec['peak_rss_mib']:>10,.0f}   {phases}")  # fmt: skip


HEADER = f"  {'':<30}{'seconds':>9}{'rows/s':>12}{'files/s':>11}{'RSS MB':>10}   phases (s)"


def _ratio(results: dict, num: str, den: str) -> str:
    if num in results and den in results and results[den]["median_seconds"] > 0:
        return f"{results[num]['median_seconds'] / results[den]['median_seconds']:.2f}x"
    return "n/a"


def summary_lines(config) -> list[str]:
    results = config.stash[RESULTS]
    size = config.getoption("--bench-size")
    lines = []
    if results["throughput"]:
        lines.append(f"Throughput, --bench-size {size}: median wall seconds, rows/s and files/s "
                     "from them, peak RSS (MB) of the whole process tree")  # fmt: skip
        for label, recs in results["throughput"].items():
            any_rec = next(iter(recs.values()))
            lines.append(f"{label}: {any_rec['runs_in_tree']:,} runs, {any_rec['files']:,} files, "
                         f"{any_rec['rows']:,} rows, {any_rec['rounds']} round(s)")  # fmt: skip
            lines.append(HEADER)
            lines += [_fmt_row(c, recs[c]) for c in CONTENDERS if c in recs]
            if len({r["rows"] for r in recs.values() if r["rows"]}) > 1:
                counts = ", ".join(f"{c} {r['rows']:,}" for c, r in recs.items())
                lines.append(f"  WARNING: contenders wrote different row counts: {counts}")
            for num, den in RATIOS:
                lines.append(f"  ratio {num + ' / ' + den + ':':<46}{_ratio(recs, num, den):>8}")
        lines.append("  (a ratio > 1 means etl-migrate took less time than the other contender)")
    for table, title in (("workers", "--workers N"), ("size", "tree size")):
        for _, recs in results[table].items():
            lines.append(f"Scaling, {title}: {ETL_NO_VERIFY}")
            lines.append(HEADER)
            lines += [_fmt_row(str(key), rec) for key, rec in recs.items()]
    return lines


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config):
    lines = summary_lines(config)
    if lines:
        terminalreporter.write_sep("=", "etl-migrate benchmark summary")
        for line in lines:
            terminalreporter.write_line(line)
