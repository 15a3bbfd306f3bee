"""Traces, assessments, logged models and datasets verified by bytes (etl/verify/traces.py,
models.py, survey.py): a clean tree made by MLflow is proven without importing MLflow; a target
with one field changed is never proven by bytes, and the verifier (bytes, then MLflow's reader for
what they could not prove, as the CLI runs it) names exactly that field."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from etl.observe import Progress
from etl.pipeline import verify
from etl.verify.claims import Claims
from etl.verify.models import MODEL_STATUSES, prove_logged_models
from etl.verify.survey import survey
from etl.verify.traces import PROMOTED_METADATA, TRACE_STATES, V2_STATUSES, prove_traces
from tests.conftest import run_cli
from tests.trees import file_client

HISTORY = [(s, 0.5 + s / 10) for s in range(5)]


def build_traced_tree(mlruns: Path) -> dict:
    import mlflow
    import pandas
    from mlflow.entities import AssessmentSource, Expectation, Feedback

    uri = mlruns.as_uri()
    mlflow.set_tracking_uri(uri)
    client = file_client(mlruns)
    try:
        exp = client.create_experiment("traced")
        other = client.create_experiment("plain")
        client.create_run(other, run_name="alone")
        mlflow.set_experiment(experiment_id=exp)
        with mlflow.start_run(experiment_id=exp) as run:
            run_id = run.info.run_id
            mlflow.log_input(mlflow.data.from_pandas(pandas.DataFrame({"x": [1, 2]}), name="ds"))
            model = mlflow.initialize_logged_model(name="trained", source_run_id=run_id,
                                                   params={"lr": "0.1"}, tags={"team": "a"})
            for step, value in HISTORY:
                mlflow.log_metric("acc", value, step=step, timestamp=1000 + step, model_id=model.model_id)
            mlflow.finalize_logged_model(model.model_id, "READY")
            with mlflow.start_span("answer") as span:
                span.set_inputs({"q": "why"})
                span.set_outputs("because")
                mlflow.update_current_trace(tags={"team": "x"}, metadata={"custom": "m"})
        mlflow.flush_trace_async_logging()
        human = AssessmentSource(source_type="HUMAN", source_id="labeler")
        first = mlflow.log_expectation(trace_id=span.trace_id, name="expected", value="yes", source=human)
        second = Expectation(name="expected", value={"answer": "no", "n": 2}, source=human,
                             trace_id=span.trace_id, metadata={"mlflow.assessment.sourceRunId": run_id})
        second.overrides = first.assessment_id
        second.rationale = "relabelled"
        second = mlflow.log_assessment(trace_id=span.trace_id, assessment=second)
        feedback = mlflow.log_assessment(trace_id=span.trace_id, assessment=Feedback(
            name="score", value=0.75, source=human, rationale="ok", metadata={"judge": "v1"}))
    finally:
        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    return {"exp": exp, "other": other, "run": run_id, "model": model.model_id, "trace": span.trace_id,
            "overridden": first.assessment_id, "overriding": second.assessment_id, "feedback": feedback.assessment_id}


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    root = tmp_path_factory.mktemp("traced")
    ids = build_traced_tree(root / "mlruns")
    db = root / "clean.db"
    result = run_cli("--source", str(root / "mlruns"), "--target", f"sqlite:///{db}", "--no-verify", "-q")
    assert result.returncode == 0, result.stderr
    return root / "mlruns", db, ids


def prove_all(mlruns, db) -> dict:
    """What the byte checks alone leave unsure: experiments, traces, logged models."""
    found = survey(str(mlruns), str(db))
    assert found.report.ok, found.report.to_text()
    unsure = {"experiments": sorted(found.unproven), "traces": [], "logged_models": []}
    for exp_id, plan in found.plan.items():
        for key, entity, prove in (("traces", "traces", prove_traces), ("models", "logged_models", prove_logged_models)):
            report, left = prove(str(db), exp_id, plan["path"], plan[key])
            assert report.ok, report.to_text()
            unsure[entity] += left
    return unsure


def test_clean_traces_and_models_are_proven_by_bytes_without_importing_mlflow(migrated):
    mlruns, db, _ = migrated
    code = (
        "import sys; from tests.integration.test_verify_bytes_traces import prove_all; "
        f"print(prove_all({str(mlruns)!r}, {str(db)!r}), 'mlflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout
    assert out.split("} ")[-1].strip() == "False"
    assert out.startswith("{'experiments': [], 'traces': [], 'logged_models': []}")


def test_clean_tree_verifies_clean_and_counts_everything(migrated):
    mlruns, db, _ = migrated
    report = anyio.run(verify, [Claims(str(mlruns))], str(db), 1, Progress())
    assert report.ok, report.to_text()
    counts = {e: report.results[e].checked for e in ("traces", "assessments", "logged_models", "datasets")}
    assert counts == {"traces": 1, "assessments": 3, "logged_models": 1, "datasets": 1}


CORRUPTIONS = {
    "trace tag value": ("UPDATE trace_tags SET value = 'y' WHERE key = 'team'", "traces", "trace", "team"),
    "trace metadata": ("UPDATE trace_request_metadata SET value = 'n' WHERE key = 'custom'", "traces", "trace", "custom"),
    "trace request time": ("UPDATE trace_info SET timestamp_ms = timestamp_ms + 1", "traces", "trace", "request_time"),
    "trace name": ("UPDATE trace_info SET trace_name = 'other'", "traces", "trace", "mlflow.traceName"),
    "assessment value": ("UPDATE assessments SET value = '0.5' WHERE assessment_id = :feedback", "assessments", "feedback", "value"),
    "assessment rationale": ("UPDATE assessments SET rationale = 'no' WHERE assessment_id = :feedback", "assessments", "feedback", "rationale"),
    "assessment metadata": ("UPDATE assessments SET assessment_metadata = '{\"judge\": \"v2\"}' WHERE assessment_id = :feedback",
                            "assessments", "feedback", "metadata"),
    "expectation valid": ("UPDATE assessments SET valid = 1 WHERE assessment_id = :overridden", "assessments", "overridden", "valid"),
    "expectation overrides": ("UPDATE assessments SET overrides = NULL WHERE assessment_id = :overriding",
                              "assessments", "overriding", "overrides"),
    "assessment run": ("UPDATE assessments SET run_id = NULL WHERE assessment_id = :overriding", "assessments", "overriding", "run_id"),
    "expectation dict value": ("UPDATE assessments SET value = '{\"answer\": \"no\", \"n\": 3}' WHERE assessment_id = :overriding",
                               "assessments", "overriding", "value"),
    "logged-model metric point": ("UPDATE logged_model_metrics SET metric_value = 9 WHERE metric_step = 2",
                                  "logged_models", "model", "metrics"),
    "logged-model metric lost": ("DELETE FROM logged_model_metrics WHERE metric_step = 4", "logged_models", "model", "metrics"),
    "model param": ("UPDATE logged_model_params SET param_value = '0.2'", "logged_models", "model", "lr"),
    "model tag": ("UPDATE logged_model_tags SET tag_value = 'b' WHERE tag_key = 'team'", "logged_models", "model", "team"),
    "model name": ("UPDATE logged_models SET name = 'x'", "logged_models", "model", "name"),
    "model status": ("UPDATE logged_models SET status = 3", "logged_models", "model", "status"),
    "dataset profile": ("UPDATE datasets SET dataset_profile = '{}'", "datasets", None, "profile"),
}


@pytest.mark.parametrize("case", CORRUPTIONS)
def test_a_corrupted_field_is_never_proven_by_bytes_and_is_named(migrated, tmp_path, case):
    mlruns, clean, ids = migrated
    sql, entity, which, field = CORRUPTIONS[case]
    db = tmp_path / "corrupt.db"
    shutil.copyfile(clean, db)
    conn = sqlite3.connect(db)
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(trace_info)")}
        if case == "trace name" and "trace_name" not in columns:
            # Releases before the trace_name column (3.10) keep the name as a tag row.
            sql = "UPDATE trace_tags SET value = 'other' WHERE key = 'mlflow.traceName'"
        assert conn.execute(sql, ids).rowcount >= 1
        conn.commit()
    finally:
        conn.close()
    assert prove_all(mlruns, db) != prove_all(mlruns, clean)

    report = anyio.run(verify, [Claims(str(mlruns))], str(db), 1, Progress())
    assert len(report.mismatches) == 1, report.to_text()
    m = report.mismatches[0]
    assert (m.entity, m.field) == (entity, field)
    if which is not None:
        assert m.id == ids[which]


def test_only_the_experiment_that_differs_goes_to_mlflows_reader(migrated, tmp_path):
    mlruns, clean, ids = migrated
    db = tmp_path / "renamed.db"
    shutil.copyfile(clean, db)
    conn = sqlite3.connect(db)
    try:
        conn.execute("UPDATE experiments SET name = 'renamed' WHERE experiment_id = ?", (ids["other"],))
        conn.commit()
    finally:
        conn.close()
    found = survey(str(mlruns), str(db))
    assert found.unproven == {ids["other"]}
    assert ids["exp"] in found.plan and ids["other"] not in found.plan
    report = anyio.run(verify, [Claims(str(mlruns))], str(db), 1, Progress())
    assert [(m.entity, m.id, m.field) for m in report.mismatches] == [("experiments", ids["other"], "name")]
    assert report.results["runs"].checked == 2  # the other experiment's run, planned by MLflow's reader


def test_constants_are_mlflows():
    from mlflow.entities import LoggedModelStatus, TraceState
    from mlflow.entities.trace_status import TraceStatus
    try:
        from mlflow.store.tracking.utils.trace_analytics import PROMOTED_TRACE_METADATA_KEYS
    except ImportError:
        # Releases before trace analytics (3.10) keep all metadata as rows: a trace holding one
        # of these keys only goes to MLflow's reader, which is never wrong, just slower.
        PROMOTED_TRACE_METADATA_KEYS = None
    if PROMOTED_TRACE_METADATA_KEYS is not None:
        assert PROMOTED_METADATA == PROMOTED_TRACE_METADATA_KEYS
    assert TRACE_STATES == {s.value for s in TraceState}
    assert all(TraceStatus(s).to_state().value == s for s in V2_STATUSES)
    assert {int(LoggedModelStatus.from_int(n).to_int()) for n in MODEL_STATUSES} == MODEL_STATUSES


@pytest.mark.parametrize("what", ["assessment", "model metric"])
def test_a_file_mlflows_reader_cannot_read_is_named_not_a_crash(migrated, tmp_path, what):
    mlruns, db, ids = migrated
    tree = tmp_path / "mlruns"
    shutil.copytree(mlruns, tree, symlinks=True)
    if what == "assessment":
        path = tree / ids["exp"] / "traces" / ids["trace"] / "assessments" / f"{ids['feedback']}.yaml"
        path.write_text(path.read_text().replace("feedback:", "judgement:"))
        expected = ("traces", ids["trace"])
    else:
        path = tree / ids["exp"] / "models" / ids["model"] / "metrics" / "acc"
        path.write_text(path.read_text() + "not a metric line\n")
        expected = ("logged_models", ids["model"])
    report = anyio.run(verify, [Claims(str(tree))], str(db), 1, Progress())
    assert [(m.entity, m.id, m.field) for m in report.mismatches] == [(*expected, "readable by MLflow")]
