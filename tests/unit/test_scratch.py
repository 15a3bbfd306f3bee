"""Rows that producers bind into scratch files reach the staging database exactly as rows the
writer binds itself, and a run left out leaves its scratch rows out (etl.sink.sqlite.scratch,
etl.sink.sqlite.writer)."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from etl.errors import MigrationError
from etl.rows import COLUMNS
from etl.sink.sqlite.schema import create_schema, schema_limits
from etl.sink.sqlite.scratch import SPILLED_TABLES, Spill
from etl.sink.sqlite.writer import StagingWriter
from etl.source.extract import extract
from etl.source.layout import RunsUnit, resolve_mlruns, tree_units
from tests.trees import file_client


@pytest.fixture(scope="module")
def mlruns(tmp_path_factory) -> Path:
    """Runs logged through MLflow's API with the values binding could get wrong: NaN, infinities,
    the largest and smallest doubles, -0.0, integers as floats, a point logged twice (the target
    keeps one), nested and non-ASCII keys, an empty param."""
    from mlflow.entities import Metric, Param, RunTag

    root = tmp_path_factory.mktemp("scratch") / "mlruns"
    client = file_client(root)
    exp = client.create_experiment("scratch")
    values = [1.5, math.nan, math.inf, -math.inf, 1.7976931348623157e308, 5e-324, -0.0, 3.0,
              0.1 + 0.2, 123456789.123456789]  # fmt: skip
    for n in range(3):
        run = client.create_run(exp, run_name=f"run {n}").info.run_id
        metrics = [Metric("loss", v, 1_700_000_000_000 + i, i) for i, v in enumerate(values)]
        metrics += [Metric("nested/ключ", 2.0, 5, 1), Metric("nested/ключ", 2.0, 5, 1)]
        client.log_batch(run, metrics=metrics, params=[Param("lr", str(n)), Param("empty", "")],
                         tags=[RunTag("note", "x" * 5000), RunTag("a/b", "🌸")])  # fmt: skip
    return resolve_mlruns(root)


def units_of(mlruns: Path) -> list:
    return tree_units(mlruns, 16)


def staged_rows(db: Path) -> dict[str, list]:
    """Every row of the spilled tables, each value with SQLite's storage class, in a set order."""
    conn = sqlite3.connect(db)
    try:
        out = {}
        for table in SPILLED_TABLES:
            columns = ", ".join(f'"{c}", typeof("{c}")' for c in COLUMNS[table])
            out[table] = conn.execute(f'SELECT {columns} FROM "{table}" ORDER BY {columns}').fetchall()
        return out
    finally:
        conn.close()


def load(tmp_path: Path, name: str, units, spill: Spill | None, skip: frozenset = frozenset()) -> Path:
    db = tmp_path / name
    create_schema(db)
    writer = StagingWriter(db, batch_size=50_000, spill=spill)
    for unit in units:
        batch = spill.extract(unit, schema_limits()) if spill else extract(unit, schema_limits())
        if batch.scratch and skip:
            batch.scratch.skip(skip)
        writer.write(batch)
    writer.finish()
    return db


def test_scratch_rows_reach_the_staging_database_as_bound_rows(mlruns, tmp_path):
    units = units_of(mlruns)
    bound = staged_rows(load(tmp_path, "bound.db", units, None))
    spilled = staged_rows(load(tmp_path, "spilled.db", units, Spill(str(tmp_path / "s.scratch-"))))
    assert len(bound["metrics"]) == 3 * 11  # the point logged twice is kept once
    assert {r[9] for r in bound["metrics"]} == {"real"}  # value: REAL, never INTEGER or TEXT
    # Bytes, not only values: -0.0 equals 0.0, so compare the doubles' representations too.
    assert spilled == bound
    assert [repr(r[8]) for r in spilled["metrics"]] == [repr(r[8]) for r in bound["metrics"]]
    assert not list(tmp_path.glob("s.scratch-*")), "a merged scratch file was left behind"


def test_a_run_left_out_leaves_its_scratch_rows_out(mlruns, tmp_path):
    unit = next(u for u in units_of(mlruns) if isinstance(u, RunsUnit))
    batch = Spill(str(tmp_path / "s.scratch-")).extract(unit, schema_limits())
    runs = sorted(batch.scratch.runs["metrics"])
    assert len(runs) == 3 and not any(batch.rows.get(t) for t in SPILLED_TABLES)
    before = batch.scratch.counts()
    batch.scratch.skip({runs[0]})
    after = batch.scratch.counts()
    assert after["metrics"] == before["metrics"] - batch.scratch.runs["metrics"][runs[0]] == 2 * 12  # rows as bound: the repeat too
    db = tmp_path / "staging.db"
    create_schema(db)
    writer = StagingWriter(db, batch_size=50_000, spill=None)
    writer.write(batch)
    try:
        # Read through the writer's connection (it holds the file's lock): finish() would refuse
        # runs whose experiment this test did not load.
        for table in SPILLED_TABLES:
            found = {r[0] for r in writer.conn.execute(f'SELECT DISTINCT run_uuid FROM "{table}"')}
            assert found == set(runs[1:]), table
    finally:
        writer.abort()


def test_finish_names_rows_whose_parent_was_not_written(mlruns, tmp_path):
    """The load's last proof: a row whose foreign key names nothing stops the run, named (the
    run-keyed tables are checked by their distinct runs, the others row by row)."""
    unit = next(u for u in units_of(mlruns) if isinstance(u, RunsUnit))
    batch = Spill(str(tmp_path / "s.scratch-")).extract(unit, schema_limits())
    orphan = sorted(batch.scratch.runs["metrics"])[0]
    batch.rows["runs"] = [r for r in batch.rows["runs"] if r[0] != orphan]
    db = tmp_path / "staging.db"
    create_schema(db)
    writer = StagingWriter(db, batch_size=50_000, spill=None)
    writer.write(batch)  # the runs' experiment is not written either
    with pytest.raises(MigrationError) as info:
        writer.finish()
    writer.abort()
    message = str(info.value)
    assert f"metrics rows of run {orphan} -> runs" in message
    assert "runs row 1 -> experiments" in message
