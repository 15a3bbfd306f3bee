"""etl-migrate beside `mlflow migrate-filestore` and a plain reference script, timed in one session.

Timings are recorded, never asserted: only a non-zero exit code fails a benchmark.
"""

from __future__ import annotations

import pytest

from harness import (
    ALONE,
    BUILTIN,
    CONTENDERS,
    ETL,
    ETL_COLD,
    ETL_NO_VERIFY,
    ETL_WARM,
    MERGED,
    MY_CONTENDERS,
    PG_CONTENDERS,
    SIZES,
    SQLITE_COPY,
    merged,
)


def _case(shape: str, factor: float, contender: str):
    """Into PostgreSQL or MySQL: a new database on the session's server (the case skips without one)."""
    marks = [pytest.mark.postgres] if contender in PG_CONTENDERS else [pytest.mark.mysql] if contender in MY_CONTENDERS else []
    name = "sqlite-copy" if contender == SQLITE_COPY else \
        contender.replace(" --", "-").replace(", PostgreSQL", "-postgres").replace(", MySQL", "-mysql")
    size = "" if factor == 1 else f"x{factor:g}-"
    return pytest.param(shape, factor, contender, marks=marks, id=f"{shape}-{size}{name}")


def pytest_generate_tests(metafunc):
    """test_throughput: every contender on each --bench-shapes tree, at each --bench-factors
    multiple of its --bench-size."""
    if metafunc.function is not test_throughput:
        return
    shapes = metafunc.config.getoption("--bench-shapes").split(",")
    factors = [float(f) for f in metafunc.config.getoption("--bench-factors").split(",")]
    cases = [_case(shape, factor, contender) for shape in shapes for factor in factors
             for contender in (*CONTENDERS, *PG_CONTENDERS, *MY_CONTENDERS)]  # fmt: skip
    metafunc.parametrize(("shape", "factor", "contender"), cases)


def test_throughput(shape, factor, contender, bench_size, tree_factory, measure):
    tree = tree_factory(shape, SIZES[bench_size][shape] * factor)
    measure(contender, tree, table="throughput", key=contender)


@pytest.mark.parametrize("workers", [1, 2, 4, 8])
def test_scaling_workers(workers, tree_factory, measure):
    """--workers on the metric-heavy ci tree (parsing uses at most one process per core)."""
    tree = tree_factory("metric-heavy", SIZES["ci"]["metric-heavy"])
    measure(ETL_NO_VERIFY, tree, table="workers", key=f"--workers {workers}", workers=workers)


@pytest.mark.parametrize("factor", [1, 10], ids=["x1", "x10"])
def test_scaling_size(factor, bench_size, tree_factory, measure):
    """Rows/s and peak RSS on issue 22's metric-heavy tree (metric-deep) and one 10x its size:
    rows/s should not fall with the size of the tree, nor RSS grow (--bench-size ci: 0.1 and
    1.0, 100 k and 1 M rows; full: 1 M and 10 M)."""
    tree = tree_factory("metric-deep", SIZES[bench_size]["metric-deep"] * factor)
    key = f"{tree.label} ({tree.runs:,} runs)"
    measure(ETL_NO_VERIFY, tree, table="size", key=key, rounds=1 if factor > 1 else None)


@pytest.mark.parametrize("contender", [ETL_COLD, ETL_WARM, BUILTIN], ids=["cold", "warm", "builtin"])
def test_start_up(contender, small_tree, warm_cache, measure):
    """A small tree end to end: a first run (empty cache: MLflow's migrations build the schema),
    a later run, and the built-in, which builds its schema on every run."""
    cache = {ETL_COLD: "empty", ETL_WARM: warm_cache}.get(contender)
    measure(contender, small_tree, table="start", key=contender, cache_dir=cache)


@pytest.mark.parametrize("case", [*ALONE, MERGED])
def test_merge(case, bench_size, tree_factory, measure):
    """Two metric-heavy trees (other seeds: their ids do not clash, their experiment names do)
    into one database in one run (--source twice), beside migrating each alone, all verified:
    the merge should cost no more than the sum of the two."""
    scale = SIZES[bench_size]["metric-heavy"]
    first, second = tree_factory("metric-heavy", scale), tree_factory("metric-heavy", scale, other_seed=1)
    tree = {ALONE[0]: first, ALONE[1]: second, MERGED: merged([first, second])}[case]
    measure(ETL, tree, table="merge", key=case)
