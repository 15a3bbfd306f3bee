"""Run verification by bytes (etl/verify/runs.py): the target rendered into the FileStore's own
format proves a clean run without MLflow, never proves a corrupted one, and hands a run whose
bytes differ but whose values are equal (a metric written as an int) to MLflow's reader, which
passes it."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
import subprocess
import sys

import pytest

from etl.verify.runs import _matches_files, _rendered_meta, _target_runs, verify_runs
from etl.verify.files import RUN_STATUS, SOURCE_TYPE
from etl.verify.report import VerificationReport
from tests.conftest import run_cli
from tests.trees import file_client


SMALL = (1e-05, 3e-07, 0.0001, -2.5e-05, 1e-300, 5e-324)


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    import mlflow
    import pandas
    from mlflow.entities import DatasetInput, InputTag, LoggedModelOutput, Metric, Param

    root = tmp_path_factory.mktemp("bytes")
    mlruns = root / "mlruns"
    client = file_client(mlruns)
    exp = client.create_experiment("bytes")
    runs = []
    for i in range(3):
        run = client.create_run(exp, run_name=f"r{i}", tags={"team": "数据", "nested/tag": "x"}).info.run_id
        client.log_batch(
            run,
            params=[Param("lr", "0.1"), Param("nested/p", "multi\nline"), Param("empty", "")],
            metrics=[Metric("loss", 1.0 / (s + 1), 1000 + s, s) for s in range(5)]
            + [Metric("nan", math.nan, 1, 0), Metric("inf", math.inf, 1, 0), Metric("neg", -math.inf, 1, 0)],
        )
        client.log_metric(run, "dup", 7.0, timestamp=5, step=3)
        client.log_metric(run, "dup", 7.0, timestamp=5, step=3)  # SQL keeps one row of the two
        client.set_terminated(run)
        runs.append(run)
    # Run inputs and outputs: a dataset (with its input tag) and a logged model.
    dataset = mlflow.data.from_pandas(pandas.DataFrame({"x": [1, 2]}), name="ds")._to_mlflow_entity()
    client.log_inputs(runs[1], datasets=[DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])])
    model = client.create_logged_model(exp, source_run_id=runs[1])
    client.log_outputs(runs[1], [LoggedModelOutput(model.model_id, 2)])
    # Points not logged step after step: the target's rows, by step, are not the file's order.
    late = client.create_run(exp, run_name="r3").info.run_id
    client.log_batch(late, metrics=[Metric("down", s / 3, 2000 - s, s) for s in range(4, -1, -1)]
                     + [Metric("same_step", s / 7, 3000 + s, 0) for s in range(3)]
                     + [Metric("nan", math.nan, 2, 5), Metric("nan", 0.0, 1, 5)]
                     # Spelled otherwise by Python's repr (1e-05) than by orjson (0.00001).
                     + [Metric("small", v, 4000 + i, i) for i, v in enumerate(SMALL)])
    runs.append(late)
    # An older client wrote integer values as ints: "1000 3 0", where the target renders "3.0".
    with open(mlruns / exp / runs[2] / "metrics" / "epoch", "w") as f:
        f.write("1000 3 0\n1001 4 1\n")
    db = root / "clean.db"
    result = run_cli("--source", str(mlruns), "--target", f"sqlite:///{db}", "--no-verify", "-q")
    assert result.returncode == 0, result.stderr
    return mlruns, db, exp, runs


def fast_path(mlruns, db, exp, run_id) -> bool:
    """Whether the byte comparison alone proves the run (no MLflow)."""
    conn = sqlite3.connect(db)
    try:
        target = _target_runs(conn, [run_id])
    finally:
        conn.close()
    return _matches_files(VerificationReport(), str(mlruns / exp), exp, run_id, target)


def test_clean_runs_are_proven_by_bytes_without_importing_mlflow(migrated):
    mlruns, db, exp, runs = migrated
    code = (
        "import sys; from etl.verify.runs import verify_runs; "
        f"r = verify_runs({str(mlruns)!r}, {str(db)!r}, {exp!r}, {str(mlruns / exp)!r}, {runs[:2]!r}); "
        "print(r.ok, r.results['metrics'].checked, 'mlflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "10", "False"]


def test_meta_yaml_is_proven_by_rendering_the_row_as_mlflow_writes_it(migrated):
    mlruns, db, exp, runs = migrated
    conn = sqlite3.connect(db)
    try:
        row = _target_runs(conn, [runs[0]])["runs"][runs[0]]
    finally:
        conn.close()
    assert _rendered_meta(row, runs[0]) == (mlruns / exp / runs[0] / "meta.yaml").read_bytes()


def test_int_written_metric_differs_in_bytes_and_passes_through_mlflow(migrated):
    mlruns, db, exp, runs = migrated
    assert not fast_path(mlruns, db, exp, runs[2])
    report = verify_runs(str(mlruns), str(db), exp, str(mlruns / exp), runs)
    assert report.ok, report.mismatches
    assert report.results["runs"].checked == 4


def test_points_in_any_order_are_proven_by_bytes(migrated):
    # Steps logged downwards, one step logged thrice, a NaN and then a 0.0 earlier at its step,
    # values below 1e-4 (Python and orjson spell them differently).
    mlruns, db, exp, runs = migrated
    assert fast_path(mlruns, db, exp, runs[3])


@pytest.mark.parametrize("change", [
    "value = 0.33333333333333337 WHERE key = 'loss' AND step = 2",  # 1/3 and the next double up
    "value = 1.0000000000000002e-05 WHERE key = 'small' AND step = 0",
    "is_nan = 1 WHERE key = 'loss' AND step = 2",  # value kept: MLflow's SQL store reads NaN
])
def test_a_value_one_double_away_is_not_proven_by_bytes(migrated, tmp_path, change):
    """The rendering proves only what reads back as the very same double: MLflow's reader (which
    allows 1e-9 relative) takes the run."""
    mlruns, clean, exp, runs = migrated
    run = runs[0] if "loss" in change else runs[3]
    db = tmp_path / "ulp.db"
    shutil.copyfile(clean, db)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute(f"UPDATE metrics SET {change} AND run_uuid = ?", (run,)).rowcount == 1
        conn.commit()
    finally:
        conn.close()
    assert fast_path(mlruns, clean, exp, run)
    assert not fast_path(mlruns, db, exp, run)


CORRUPTIONS = {
    "changed metric value": ("UPDATE metrics SET value = value + 1 WHERE key = 'loss' AND step = 2", "metrics", "step 2 @ 1002"),
    "dropped metric row": ("DELETE FROM metrics WHERE key = 'loss' AND step = 4", "metrics", "points"),
    "extra metric row": ("INSERT INTO metrics SELECT key, value, timestamp + 1, run_uuid, step, is_nan FROM metrics WHERE key = 'loss' AND step = 0", "metrics", "points"),
    "extra metric key": ("INSERT INTO metrics SELECT 'other', value, timestamp, run_uuid, step, is_nan FROM metrics WHERE key = 'loss' AND step = 0", "metrics", "points"),
    "NaN flag lost": ("UPDATE metrics SET is_nan = 0 WHERE key = 'nan'", "metrics", "step 0 @ 1"),
    "NaN flag set": ("UPDATE metrics SET is_nan = 1, value = 0 WHERE key = 'loss' AND step = 2", "metrics",
                     "step 2 @ 1002"),
    "values of two steps swapped": ("UPDATE metrics SET value = CASE step WHEN 1 THEN 0.3333333333333333 ELSE 0.5 END "
                                    "WHERE key = 'loss' AND step IN (1, 2)", "metrics", "step 1 @ 1001"),
    "Inf made finite": ("UPDATE metrics SET value = 1e308 WHERE key = 'inf'", "metrics", "step 0 @ 1"),
    "changed param": ("UPDATE params SET value = value || 'x' WHERE key = 'nested/p'", "params", "nested/p"),
    "dropped param": ("DELETE FROM params WHERE key = 'empty'", "params", "empty"),
    "changed tag": ("UPDATE tags SET value = 'y' WHERE key = 'nested/tag'", "tags", "nested/tag"),
    "changed latest metric": ("UPDATE latest_metrics SET step = 0 WHERE key = 'loss'", "latest_metrics", "loss"),
    "changed run status": ("UPDATE runs SET status = 'FAILED'", "runs", "status"),
    "changed input tag": ("UPDATE input_tags SET value = 'x' WHERE input_uuid IN (SELECT input_uuid FROM inputs "
                          "WHERE destination_id = ?)", "inputs", "dataset_inputs"),
    "changed output step": ("UPDATE inputs SET step = 3 WHERE source_type = 'RUN_OUTPUT' AND source_id = ?",
                            "inputs", "model_outputs"),
}


@pytest.mark.parametrize("case", CORRUPTIONS)
def test_a_corrupted_target_is_never_proven_by_bytes_and_is_reported(migrated, tmp_path, case):
    mlruns, clean, exp, runs = migrated
    sql, entity, field = CORRUPTIONS[case]
    db = tmp_path / "corrupt.db"
    shutil.copyfile(clean, db)
    run = runs[1]
    conn = sqlite3.connect(db)
    try:
        if "?" in sql:
            assert conn.execute(sql, (run,)).rowcount == 1
        else:
            assert conn.execute(f"{sql} {'AND' if 'WHERE' in sql else 'WHERE'} run_uuid = ?", (run,)).rowcount >= 1
        conn.commit()
    finally:
        conn.close()
    assert fast_path(mlruns, clean, exp, run)
    assert not fast_path(mlruns, db, exp, run)

    report_path = tmp_path / "report.json"
    result = run_cli("verify", "--source", str(mlruns), "--target", f"sqlite:///{db}", "--report", str(report_path))
    assert result.returncode == 1, result.stdout + result.stderr
    (m,) = json.loads(report_path.read_text())["verification"]["mismatches"]
    assert (m["entity"], m["field"]) == (entity, field)
    assert m["id"].split("/")[0] == run


def test_enum_numbers_are_mlflows():
    from mlflow.entities import RunStatus, SourceType

    assert sorted(RUN_STATUS) == sorted(RunStatus.all_status())
    assert all(RunStatus.to_string(number) == name for number, name in RUN_STATUS.items())
    assert all(SourceType.to_string(number) == name for number, name in SOURCE_TYPE.items())
    assert all(SourceType.from_string(name) == number for number, name in SOURCE_TYPE.items())


def with_loose_files(mlruns, tmp_path, exp, run):
    """A copy of the tree with a note left in the run's inputs/ and outputs/ folders."""
    tree = tmp_path / "mlruns"
    shutil.copytree(mlruns, tree, symlinks=True)
    for folder in ("inputs", "outputs"):
        (tree / exp / run / folder / "NOTES.txt").write_text("who logged this?\n")
    return tree


def test_a_loose_file_in_a_runs_inputs_is_no_input(migrated, tmp_path):
    """MLflow's reader takes every entry of inputs/ for an input's folder and fails on a file;
    its own migration, the load and the census leave the file out, and so does verification,
    by bytes and through MLflow's reader alike."""
    mlruns, db, exp, runs = migrated
    run = runs[1]
    tree = with_loose_files(mlruns, tmp_path, exp, run)
    report_path = tmp_path / "report.json"
    result = run_cli("--source", str(tree), "--target", f"sqlite:///{tmp_path / 'new.db'}", "--report", str(report_path))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert {f"{exp}/{run}/{f}/NOTES.txt" for f in ("inputs", "outputs")} <= set(
        json.loads(report_path.read_text())["census"]["not_filestore"])
    assert fast_path(tree, db, exp, run)
    # A metric written as an int sends the run to MLflow's reader, which must read past the note.
    with open(tree / exp / run / "metrics" / "loss", "a") as f:
        f.write("2000 3 9\n")
    conn = sqlite3.connect(tmp_path / "new.db")
    try:
        conn.execute("INSERT INTO metrics VALUES ('loss', 3.0, 2000, ?, 9, 0)", (run,))
        conn.execute("UPDATE latest_metrics SET value = 3.0, timestamp = 2000, step = 9 WHERE run_uuid = ? "
                     "AND key = 'loss'", (run,))
        conn.commit()
    finally:
        conn.close()
    assert not fast_path(tree, tmp_path / "new.db", exp, run)
    report = verify_runs(str(tree), str(tmp_path / "new.db"), exp, str(tree / exp), [run])
    assert report.ok, report.to_text()
    assert report.results["inputs"].checked == 1


def test_a_loose_file_in_inputs_does_not_hide_a_wrong_input(migrated, tmp_path):
    mlruns, clean, exp, runs = migrated
    run = runs[1]
    tree = with_loose_files(mlruns, tmp_path, exp, run)
    db = tmp_path / "corrupt.db"
    shutil.copyfile(clean, db)
    conn = sqlite3.connect(db)
    try:
        conn.execute("UPDATE inputs SET step = 3 WHERE source_type = 'RUN_OUTPUT' AND source_id = ?", (run,))
        conn.commit()
    finally:
        conn.close()
    report_path = tmp_path / "report.json"
    result = run_cli("verify", "--source", str(tree), "--target", f"sqlite:///{db}", "--report", str(report_path))
    assert result.returncode == 1, result.stdout + result.stderr
    (m,) = json.loads(report_path.read_text())["verification"]["mismatches"]
    assert (m["entity"], m["id"], m["field"]) == ("inputs", run, "model_outputs")


def test_an_input_mlflow_cannot_read_is_a_named_mismatch(migrated, tmp_path):
    """Not an internal error (exit 4): the run is named, with MLflow's reason."""
    mlruns, db, exp, runs = migrated
    tree = with_loose_files(mlruns, tmp_path, exp, runs[1])
    bogus = tree / exp / runs[1] / "inputs" / "bogus"
    bogus.mkdir()
    (bogus / "meta.yaml").write_text("source_type: FOO\nsource_id: x\ndestination_type: RUN\n"
                                     "destination_id: x\ntags: {}\n")
    report_path = tmp_path / "report.json"
    result = run_cli("verify", "--source", str(tree), "--target", f"sqlite:///{db}", "--report", str(report_path))
    assert result.returncode == 1, result.stdout + result.stderr
    (m,) = json.loads(report_path.read_text())["verification"]["mismatches"]
    assert (m["entity"], m["id"], m["field"]) == ("runs", runs[1], "readable by MLflow")
    assert "FOO" in m["source"]


def test_infinities_are_counted_by_bytes_and_through_mlflow_alike(migrated):
    """Run metric +-Inf (held as +-max) are counted per point in the files, whichever way the
    run is proven; a NaN keeps its is_nan flag and is not counted."""
    mlruns, db, exp, runs = migrated
    assert fast_path(mlruns, db, exp, runs[0]) and not fast_path(mlruns, db, exp, runs[2])
    report = verify_runs(str(mlruns), str(db), exp, str(mlruns / exp), runs)
    assert dict(report.lossy) == {
        **{("metrics", run, "inf", "+Inf"): 1 for run in runs[:3]},  # the runs that logged them
        **{("metrics", run, "neg", "-Inf"): 1 for run in runs[:3]},
    }
