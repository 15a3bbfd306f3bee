"""Values the target cannot hold are invalid input, found before anything is written: integers
beyond 64 bits, text where a number belongs, a name two experiments share. Strict runs list each
with its file (and line) beside every other problem, exit 3 and write nothing; --skip-invalid
leaves those entities out, migrates the rest and verifies it.

The base tree is real (the fixture generator under the installed MLflow); the damage is done by
hand, as a tree merged or edited by hand would carry it.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
import yaml

from etl.sink.sqlite.schema import schema_limits
from etl.sql_limits import INT32, ColumnLimit, check_rows
from tests.conftest import generate_fixture_tree, run_cli, tree_fingerprint
from tests.faults.test_bad_input import _edit_yaml, _runs

BEYOND = "is beyond the target's 64-bit integer range"
TOO_BIG = 2**64
TOO_SMALL = -(2**63) - 1
BIG_EXPERIMENT = str(10**20)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return generate_fixture_tree(tmp_path_factory.mktemp("limits") / "tree") / "mlruns"


def _experiments(mlruns: Path) -> dict[str, Path]:
    """name -> folder of every active experiment."""
    return {yaml.safe_load((p / "meta.yaml").read_text())["name"]: p
            for p in sorted(mlruns.iterdir()) if (p / "meta.yaml").is_file()}


def damage(mlruns: Path) -> tuple[dict[str, str], dict[str, str], tuple[str, str]]:
    """Damage beyond the target's limits; return ({where: reason fragment}, {kind: id left out},
    the two folders of one trace id)."""
    experiments = _experiments(mlruns)
    expected: dict[str, str] = {}
    left_out: dict[str, str] = {}
    main = max(experiments.values(), key=lambda p: len(list(p.iterdir())))
    runs = [r for r in _runs(mlruns) if r.parent == main]

    metric = runs[0] / "metrics" / "huge_timestamp"
    metric.parent.mkdir(exist_ok=True)
    metric.write_text(f"1 1.0 0\n2 2.0 1\n{TOO_BIG} 3.0 2\n")
    expected[f"{metric}:3"] = f"metrics.timestamp {TOO_BIG} {BEYOND}"
    left_out["runs"] = runs[0].name

    metric = runs[1] / "metrics" / "huge_step"
    metric.parent.mkdir(exist_ok=True)
    metric.write_text(f"1 1.0 {TOO_SMALL}\n")
    expected[f"{metric}:1"] = f"metrics.step {TOO_SMALL} {BEYOND}"

    meta = runs[2] / "meta.yaml"
    _edit_yaml(meta, start_time="yesterday")
    expected[str(meta)] = "'start_time' must be integer, found text 'yesterday'"
    # A second problem of the same run, in the same file: both are listed.
    _edit_yaml(meta, user_id={"name": "x"})
    expected[f"{meta} "] = "'user_id' must be text, found mapping"

    model = min(main.glob("models/*/meta.yaml")).parent
    metric = min(p for p in (model / "metrics").rglob("*") if p.is_file())
    lines = metric.read_text().splitlines()
    run_id = lines[0].split(" ")[3]
    metric.write_text("\n".join([*lines, f"5 1.0 {TOO_BIG} {run_id}"]) + "\n")
    expected[f"{metric}:{len(lines) + 1}"] = f"logged_model_metrics.metric_step {TOO_BIG} {BEYOND}"
    left_out["logged_models"] = model.name

    version = min(mlruns.glob("models/*/version-*/meta.yaml"))
    _edit_yaml(version, creation_timestamp=TOO_BIG)
    expected[str(version)] = f"model_versions.creation_time {TOO_BIG} {BEYOND}"

    # An experiment folder whose id is beyond 64 bits: the experiment and its run name it.
    small = next(p for p in experiments.values()
                 if p not in (main,) and p.name != "0" and not (p / "traces").exists())
    big = mlruns / BIG_EXPERIMENT
    small.rename(big)
    _edit_yaml(big / "meta.yaml", experiment_id=BIG_EXPERIMENT)
    expected[str(big / "meta.yaml")] = f"experiments.experiment_id {BIG_EXPERIMENT} {BEYOND}"
    for run_meta in sorted(big.glob("*/meta.yaml")):
        _edit_yaml(run_meta, experiment_id=BIG_EXPERIMENT)
        expected[str(run_meta)] = f"runs.experiment_id {BIG_EXPERIMENT} {BEYOND}"

    # Two experiments with one name (a tree merged by hand): both named, both left out.
    # The second one holds assessments and run inputs, copied below; which experiment that is
    # depends on the random ids the generator's MLflow gave the folders, not on their order.
    rest = [p for p in experiments.values() if p not in (main, small)]
    second = next(p for p in rest if any(p.glob("traces/*/assessments/*.yaml")) and any(p.glob("*/inputs/*")))
    first = next(p for p in rest if p != second)
    name = yaml.safe_load((first / "meta.yaml").read_text())["name"]
    _edit_yaml(second / "meta.yaml", name=name)
    expected[str(first / "meta.yaml")] = f"experiment name {name!r} is also the name of {second / 'meta.yaml'}"
    expected[str(second / "meta.yaml")] = f"experiment name {name!r} is also the name of {first / 'meta.yaml'}"
    left_out["experiments"] = second.name

    # One dataset in two folders of an experiment (FileStore names them by a hash of name and
    # digest, so only a hand copy does this): both are left out, and with --skip-invalid so are the
    # runs that use it.
    dataset = min((main / "datasets").iterdir())
    copy = dataset.parent / ("0" * 32)
    shutil.copytree(dataset, copy)
    expected[str(dataset / "meta.yaml")] = f"is also in {copy}; the target holds it once"
    expected[str(copy / "meta.yaml")] = f"is also in {dataset}; the target holds it once"

    # One trace id in two experiments: which copy is met second is a matter of timing, so the
    # problem names both folders.
    trace = min((main / "traces").iterdir())
    twin = second / "traces" / trace.name
    shutil.copytree(trace, twin)
    # ...edited to name its new experiment (a copy naming the old one is refused on its own).
    info = yaml.safe_load((twin / "trace_info.yaml").read_text())
    info["trace_location"]["mlflow_experiment"]["experiment_id"] = second.name
    (twin / "trace_info.yaml").write_text(yaml.safe_dump(info))
    left_out["traces"] = trace.name

    # Two files of one entity with one key: an assessment copied under another name (MLflow names
    # each file by its id), a dataset linked twice by a run.
    original = min(p for p in second.glob("traces/*/assessments/*.yaml") if trace.name not in str(p))
    duplicate = original.with_name("zz-copy.yaml")
    shutil.copyfile(original, duplicate)
    expected[str(duplicate)] = "disagrees with its file name"
    run_input = min(p for p in second.glob("*/inputs/*") if p.is_dir())
    linked_twice = run_input.with_name("f" * 32)
    shutil.copytree(run_input, linked_twice)
    expected[str(linked_twice / "meta.yaml")] = f"as {run_input / 'meta.yaml'}; the target holds one input per link"

    # A value of the wrong shape where the code expects a mapping.
    assessment = min(p for p in main.glob("traces/*/assessments/*.yaml") if trace.name not in str(p))
    data = yaml.safe_load(assessment.read_text())
    data["feedback" if "feedback" in data else "expectation"] = "not a mapping"
    assessment.write_text(yaml.safe_dump(data))
    expected[str(assessment)] = "must be mapping, found text"
    return expected, left_out, (str(trace), str(twin))


@pytest.fixture(scope="module")
def damaged(base, tmp_path_factory):
    mlruns = tmp_path_factory.mktemp("beyond") / "mlruns"
    shutil.copytree(base, mlruns, symlinks=True)
    expected, left_out, twins = damage(mlruns)
    return mlruns, expected, left_out, twins, tree_fingerprint(mlruns)


def _listed(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("  - ") and " row(s) " not in line]


def _find(listed: list[str], where: str, reason: str) -> bool:
    where = where.rstrip()
    return any(f"- {where}: " in line and reason in line for line in listed)


def _find_twins(listed: list[str], twins: tuple[str, str]) -> bool:
    return any(all(f"{t}" in line for t in twins) and "the same id is also the folder" in line for line in listed)


def test_strict_lists_every_value_beyond_the_target_and_writes_nothing(damaged, tmp_path):
    mlruns, expected, _, twins, before = damaged
    report = tmp_path / "report.json"
    result = run_cli("--source", str(mlruns), "--target", f"sqlite:///{tmp_path}/mlflow.db",
                     "--report", str(report))
    assert result.returncode == 3, result.stderr[-3000:]
    listed = _listed(result.stderr)
    for where, reason in expected.items():
        assert _find(listed, where, reason), (where, reason, listed)
    assert _find_twins(listed, twins), listed
    assert len(listed) == len(expected) + 1, "\n".join(listed)
    assert "internal error" not in result.stderr and "UNIQUE constraint" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    assert json.loads(report.read_text())["exit_status"] == 3
    assert tree_fingerprint(mlruns) == before


def test_dry_run_finds_the_same_problems(damaged, tmp_path):
    mlruns, expected, _, _, _ = damaged
    result = run_cli("--dry-run", "--source", str(mlruns), "--target", f"sqlite:///{tmp_path}/mlflow.db")
    assert result.returncode == 3, result.stderr[-3000:]
    assert len(_listed(result.stderr)) == len(expected) + 1
    assert list(tmp_path.iterdir()) == []


def test_skip_invalid_leaves_them_out_migrates_the_rest_and_verifies(damaged, tmp_path):
    mlruns, expected, left_out, twins, before = damaged
    db = tmp_path / "mlflow.db"
    report_path = tmp_path / "report.json"
    result = run_cli("--source", str(mlruns), "--target", f"sqlite:///{db}", "--skip-invalid",
                     "--report", str(report_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    listed = _listed(result.stdout)
    for where, reason in expected.items():
        assert _find(listed, where, reason), (where, reason)
    assert _find_twins(listed, twins)
    report = json.loads(report_path.read_text())
    assert report["verification"]["status"] == "SUCCESS"

    conn = sqlite3.connect(db)
    try:
        assert not conn.execute("SELECT 1 FROM runs WHERE run_uuid = ?", (left_out["runs"],)).fetchall()
        assert not conn.execute("SELECT 1 FROM trace_info WHERE request_id = ?", (left_out["traces"],)).fetchall()
        assert conn.execute("SELECT COUNT(*) FROM inputs WHERE source_type = 'DATASET' AND source_id NOT IN "
                            "(SELECT dataset_uuid FROM datasets)").fetchone() == (0,)
        assert not conn.execute("SELECT 1 FROM logged_models WHERE model_id = ?",
                                (left_out["logged_models"],)).fetchall()
        assert not conn.execute("SELECT 1 FROM experiments WHERE experiment_id = ?",
                                (int(left_out["experiments"]),)).fetchall()
        names = [n for (n,) in conn.execute("SELECT name FROM experiments")]
        # Everything else arrived: the main experiment's other runs, for one.
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] > 0
    finally:
        conn.close()
    assert len(names) == len(set(names))
    assert tree_fingerprint(mlruns) == before


def test_limits_come_from_the_target_schema():
    """Read from MLflow's own SQLite schema: NOT NULL, CHECK (... IN ...), 64-bit integers; a
    target with narrower columns (PostgreSQL) supplies its own limits to the same check."""
    limits = schema_limits()
    run = ("r1", "name", "LOCAL", "", "", None, "PAUSED", 1, None, None, "", "active", None, 0)
    found = check_rows({"runs": [run]}, limits)
    assert [v.reason for v in found] == [(
        "runs.status 'PAUSED' is not a value the target accepts "
        "('FAILED', 'FINISHED', 'KILLED', 'RUNNING', 'SCHEDULED')"
    )]
    found = check_rows({"params": [("r1", None, "v")]}, limits)
    assert [v.reason for v in found] == ["params.key is missing (the target requires a value)"]
    assert not check_rows({"experiments": [(2**63 - 1, "e", None, "active", None, None)]}, limits)

    narrower = dict(limits)
    narrower[("experiments", "experiment_id")] = ColumnLimit("integer", nullable=False, int_range=INT32)
    narrower[("experiments", "name")] = ColumnLimit("text", nullable=False, max_length=5)
    narrower[("experiments", "artifact_location")] = ColumnLimit("text", nul_allowed=False)
    found = check_rows({"experiments": [(2**31, "too long", "s3://a\x00b", "active", None, None)]}, narrower)
    assert [v.reason for v in found] == [
        f"experiments.experiment_id {2**31} is beyond the target's 32-bit integer range",
        "experiments.name is 8 characters long; the target holds at most 5",
        "experiments.artifact_location holds a NUL character, which the target cannot store",
    ]
    assert not check_rows({"experiments": [(2**31 - 1, "short", "s3://ab", "active", None, None)]}, narrower)


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory) -> dict:
    """A run, a logged model with a metric of that run, three traces with an assessment each."""
    import mlflow
    from mlflow.entities import AssessmentSource

    from tests.trees import default_uris

    mlruns = tmp_path_factory.mktemp("keys") / "mlruns"
    with default_uris(mlruns):
        exp = mlflow.create_experiment("keys")
        mlflow.set_experiment(experiment_id=exp)
        with mlflow.start_run() as run:
            model = mlflow.initialize_logged_model(name="m", source_run_id=run.info.run_id)
            mlflow.log_metric("rmse", 0.5, step=1, model_id=model.model_id)
            mlflow.finalize_logged_model(model.model_id, "READY")
        traces = []
        for i in range(3):
            with mlflow.start_span(f"span-{i}") as span:
                span.set_inputs({"i": i})
            traces.append(span.trace_id)
        mlflow.flush_trace_async_logging()
        human = AssessmentSource(source_type="HUMAN", source_id="labeler")
        for trace_id in traces:
            mlflow.log_feedback(trace_id=trace_id, name="score", value=1, source=human)
    return {"mlruns": mlruns, "exp": exp, "run": run.info.run_id, "model": model.model_id, "traces": traces}


def _copy(tree: dict, tmp_path: Path) -> Path:
    mlruns = tmp_path / "mlruns"
    shutil.copytree(tree["mlruns"], mlruns, symlinks=True)
    return mlruns


def _rows(db: Path, sql: str, *params) -> list:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def test_one_assessment_id_in_two_traces_is_invalid_input(small_tree, tmp_path):
    """The target keys assessments by id alone: exit 3 naming both files, not a UNIQUE constraint
    error (exit 4); --skip-invalid leaves both traces out and verifies the rest."""
    mlruns = _copy(small_tree, tmp_path)
    first, second, third = (mlruns / small_tree["exp"] / "traces" / t for t in small_tree["traces"])
    original = next((first / "assessments").iterdir())
    copy = second / "assessments" / original.name
    # A copy naming its new trace (one naming the old trace is refused on its own).
    data = yaml.safe_load(original.read_text())
    copy.write_text(yaml.safe_dump({**data, "trace_id": second.name}))

    result = run_cli("--source", str(mlruns), "--target", f"sqlite:///{tmp_path}/strict.db")
    assert result.returncode == 3, result.stderr[-3000:]
    listed = _listed(result.stderr)
    assert len(listed) == 2, listed
    for this, other in ((copy, original), (original, copy)):
        assert _find(listed, str(this), f"is also the id in {other}; the target keys assessments by id"), listed
    assert not (tmp_path / "strict.db").exists()

    db = tmp_path / "skip.db"
    report_path = tmp_path / "report.json"
    result = run_cli("--source", str(mlruns), "--target", f"sqlite:///{db}", "--skip-invalid", "--report", str(report_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert json.loads(report_path.read_text())["verification"]["status"] == "SUCCESS"
    assert _rows(db, "SELECT request_id FROM trace_info") == [(third.name,)]
    assert len(_rows(db, "SELECT 1 FROM assessments")) == 1


def test_a_model_metric_naming_a_run_not_in_the_tree_is_invalid_input(small_tree, tmp_path):
    """The target keys a logged-model metric to its run: exit 3 naming the metric file (a dry
    run too), not a foreign key error (exit 4); --skip-invalid leaves the model out."""
    mlruns = _copy(small_tree, tmp_path)
    metric = mlruns / small_tree["exp"] / "models" / small_tree["model"] / "metrics" / "rmse"
    absent = "feedface" * 4
    metric.write_text(metric.read_text().replace(small_tree["run"], absent))
    reason = f"the metric names run {absent}, which is not in the tree"

    for extra in ((), ("--dry-run",)):
        result = run_cli("--source", str(mlruns), "--target", f"sqlite:///{tmp_path}/strict.db", *extra)
        assert result.returncode == 3, result.stderr[-3000:]
        listed = _listed(result.stderr)
        assert len(listed) == 1 and _find(listed, str(metric), reason), listed
        assert not (tmp_path / "strict.db").exists()

    db = tmp_path / "skip.db"
    report_path = tmp_path / "report.json"
    result = run_cli("--source", str(mlruns), "--target", f"sqlite:///{db}", "--skip-invalid", "--report", str(report_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["verification"]["status"] == "SUCCESS"
    assert [p["reason"] for p in report["skipped"] if p["path"]] == [reason]
    assert _rows(db, "SELECT 1 FROM logged_models") == []
    assert _rows(db, "SELECT run_uuid FROM runs") == [(small_tree["run"],)]
