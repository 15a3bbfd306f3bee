"""etl-migrate beside `mlflow migrate-filestore` and a plain reference script, timed in one session.

Timings are recorded, never asserted: only a non-zero exit code fails a benchmark.
"""

from __future__ import annotations

import pytest

from harness import BUILTIN, CONTENDERS, ETL_COLD, ETL_NO_VERIFY, ETL_WARM, PG_CONTENDERS, SHAPES, SIZES

def _case(shape: str, contender: str):
    """Into PostgreSQL: a new database on the session's server (the case skips without one)."""
    marks = [pytest.mark.postgres] if contender in PG_CONTENDERS else []
    name = contender.replace(" --", "-").replace(", PostgreSQL", "-postgres")
    return pytest.param(shape, contender, marks=marks, id=f"{shape}-{name}")


CASES = [_case(shape, contender) for shape in SHAPES for contender in (*CONTENDERS, *PG_CONTENDERS)]


@pytest.mark.parametrize(("shape", "contender"), CASES)
def test_throughput(shape, contender, bench_size, tree_factory, measure):
    tree = tree_factory(shape, SIZES[bench_size][shape])
    measure(contender, tree, table="throughput", key=contender)


@pytest.mark.parametrize("workers", [1, 2, 4, 8])
def test_scaling_workers(workers, tree_factory, measure):
    """--workers on the metric-heavy ci tree (parsing uses at most one process per core)."""
    tree = tree_factory("metric-heavy", SIZES["ci"]["metric-heavy"])
    measure(ETL_NO_VERIFY, tree, table="workers", key=f"--workers {workers}", workers=workers)


@pytest.mark.parametrize("factor", [1, 10], ids=["x1", "x10"])
def test_scaling_size(factor, bench_size, tree_factory, measure, pytestconfig):
    """Time and peak RSS on a metric-heavy tree and one 10x its size: RSS should stay flat."""
    if factor == 10 and bench_size != "full" and not pytestconfig.getoption("--bench-x10"):
        pytest.skip("x10 runs only under --bench-size full or with --bench-x10")
    base = SIZES[bench_size]["metric-heavy"]
    tree = tree_factory("metric-heavy", base * factor)
    key = f"{tree.label} ({tree.runs:,} runs)"
    measure(ETL_NO_VERIFY, tree, table="size", key=key, rounds=1 if factor > 1 else None)


@pytest.mark.parametrize("contender", [ETL_COLD, ETL_WARM, BUILTIN], ids=["cold", "warm", "builtin"])
def test_start_up(contender, small_tree, warm_cache, measure):
    """A small tree end to end: a first run (empty cache: MLflow's migrations build the schema),
    a later run, and the built-in, which builds its schema on every run."""
    cache = {ETL_COLD: "empty", ETL_WARM: warm_cache}.get(contender)
    measure(contender, small_tree, table="start", key=contender, cache_dir=cache)
