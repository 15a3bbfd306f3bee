"""Where MLflow's FileStore reader shows less than its files hold, the verifier reads the files.

One tree made with MLflow's public API holds each such gap. It is migrated once with the default
command (verification on), which must pass; then each case copies the database, removes or
changes exactly the thing the reader does not show, and verifies: the mismatch must be named.
The verification runs in this process (the same functions the CLI runs in its workers), so the
many cases stay cheap.
"""

from __future__ import annotations

import json
import math
import shutil
import sqlite3

import pytest

from etl.verify.compare import verify_experiments, verify_logged_models, verify_traces
from etl.verify.registry import verify_registry
from etl.verify.report import VerificationReport
from etl.verify.runs import verify_runs
from tests.conftest import run_cli
from tests.trees import default_uris, file_client, sql_client

HISTORY = [(s, round(1.0 / (s + 1), 6)) for s in range(5)]


def build_gap_tree(mlruns) -> dict:
    import mlflow
    from mlflow.entities import AssessmentSource, Expectation, Feedback

    client = file_client(mlruns)
    ids: dict = {}
    # default_uris restores the URIs and the active experiment this sets (process-wide).
    with default_uris(mlruns):
        exp = client.create_experiment("gaps")
        # The active experiment is process-wide: another module's tree may have left its own.
        mlflow.set_experiment(experiment_id=exp)
        with mlflow.start_run(experiment_id=exp) as run:
            run_id = run.info.run_id
            model = mlflow.initialize_logged_model(name="trained", source_run_id=run_id)
            # A training loop: one model metric at every step (the reader keeps the last only).
            for step, value in HISTORY:
                mlflow.log_metric("rmse", value, step=step, timestamp=1000 + step, model_id=model.model_id)
            # Values the SQL store cannot hold as written (0 and +-max, with no flag).
            for key, value in (("m_nan", math.nan), ("m_pos_inf", math.inf), ("m_neg_inf", -math.inf)):
                mlflow.log_metric(key, value, step=0, timestamp=2000, model_id=model.model_id)
            # The same (metric, timestamp, step, run) twice: the SQL store keeps the first.
            for value in (1.0, 2.0):
                mlflow.log_metric("twice", value, step=0, timestamp=3000, model_id=model.model_id)
            mlflow.finalize_logged_model(model.model_id, "READY")
            dataset = mlflow.data.from_pandas(__import__("pandas").DataFrame({"x": [1, 2]}), name="ds")
            mlflow.log_metric("with_dataset", 1.5, step=7, dataset=dataset)
            mlflow.log_metric("run_inf", math.inf, step=0)
            # The same point twice: the file keeps both lines, the database one row.
            for _ in range(2):
                mlflow.log_metric("dup", 7.0, step=3, timestamp=5000)
            # Values are the file's bytes: newlines inside and at the end are part of them.
            mlflow.log_param("multiline", "first\nsecond\n")
        ids.update(exp=exp, run=run_id, model=model.model_id)

        gone = mlflow.initialize_logged_model(name="discarded", experiment_id=exp)
        mlflow.finalize_logged_model(gone.model_id, "FAILED")
        client.delete_logged_model(gone.model_id)
        ids["deleted_model"] = gone.model_id

        deleted_run = client.create_run(exp, run_name="deleted").info.run_id
        client.delete_run(deleted_run)
        ids["deleted_run"] = deleted_run

        with mlflow.start_run(run_id=run_id), mlflow.start_span("answer") as span:
            # Token usage and the session become trace metadata, which newer MLflow keeps in
            # trace_info columns.
            span.set_attribute("mlflow.chat.tokenUsage", {"input_tokens": 5, "output_tokens": 3, "total_tokens": 8})
            mlflow.update_current_trace(metadata={"mlflow.trace.session": "session-1"})
        mlflow.flush_trace_async_logging()
        human = AssessmentSource(source_type="HUMAN", source_id="labeler")
        first = mlflow.log_expectation(trace_id=span.trace_id, name="expected", value="yes", source=human)
        # An expectation that overrides the first: the file of the first then says valid: false.
        # The run an assessment came from is kept as metadata (mlflow.genai.evaluate does so);
        # MLflow's entity, and its SQL store's run_id column, take it from there.
        from_run = {"mlflow.assessment.sourceRunId": run_id}
        second = Expectation(name="expected", value="no", source=human, trace_id=span.trace_id,
                             metadata=from_run)
        second.overrides = first.assessment_id
        second.rationale = "relabelled"
        second = mlflow.log_assessment(trace_id=span.trace_id, assessment=second)
        feedback = Feedback(name="score", value=3, source=human, trace_id=span.trace_id,
                            rationale="ok", metadata=from_run)
        feedback = mlflow.log_assessment(trace_id=span.trace_id, assessment=feedback)
        ids.update(trace=span.trace_id, overridden=first.assessment_id, overriding=second.assessment_id,
                   feedback=feedback.assessment_id)

        client.create_registered_model("registered")
        client.create_model_version("registered", f"models:/{model.model_id}", model_id=model.model_id)
        client.set_registered_model_alias("registered", "champion", "1")
        mlflow.genai.register_prompt(name="prompt", template="Answer {{q}}")
    return ids


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    root = tmp_path_factory.mktemp("gaps")
    ids = build_gap_tree(root / "mlruns")
    db = root / "mlflow.db"
    report = root / "report.json"
    # The default command, verification on: this is what refused such trees before.
    result = run_cli("--source", str(root), "--target", f"sqlite:///{db}", "--report", str(report))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root / "mlruns", db, ids, result, json.loads(report.read_text())


def verify_in_process(mlruns, db) -> VerificationReport:
    root, target = str(mlruns), str(db)
    report, plan = verify_experiments(root, target)
    report.merge(verify_registry(root, target))
    for exp_id, ids in plan.items():
        report.merge(verify_runs(root, target, exp_id, ids["path"], ids["runs"]))
        for func, key in ((verify_traces, "traces"), (verify_logged_models, "models")):
            if ids[key]:
                report.merge(func(root, target, exp_id, ids[key]))
    return report


def planted(migrated, tmp_path, sql: str, *params) -> VerificationReport:
    """Verify a copy of the migrated database changed by one SQL statement (one row, at least)."""
    mlruns, clean, _, _, _ = migrated
    db = tmp_path / "planted.db"
    shutil.copyfile(clean, db)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute(sql, params).rowcount >= 1, sql
        conn.commit()
    finally:
        conn.close()
    return verify_in_process(mlruns, db)


def only(report: VerificationReport) -> tuple[str, str, str]:
    assert len(report.mismatches) == 1, report.to_text()
    m = report.mismatches[0]
    return m.entity, m.id, m.field


def test_every_point_of_a_logged_model_metric_is_migrated(migrated):
    mlruns, db, ids, result, _ = migrated
    assert "Status: SUCCESS" in result.stdout
    reader = file_client(mlruns).get_logged_model(ids["model"])
    assert [m.step for m in reader.metrics if m.key == "rmse"] == [4]  # MLflow's reader: the last
    points = sorted((m.step, m.value) for m in sql_client(db).get_logged_model(ids["model"]).metrics
                    if m.key == "rmse")
    assert points == HISTORY


def test_values_the_database_cannot_hold_are_counted_and_named(migrated):
    _, db, ids, result, report = migrated
    named = {(d["entity"], d["id"], d["key"], d["value"]): (d["points"], d["stored_as"])
             for d in report["unrepresentable_values"]}
    model, run = ids["model"], ids["run"]
    assert named == {
        ("logged model", model, "m_nan", "NaN"): (1, "0 (no NaN flag: reads back as 0)"),
        ("logged model", model, "m_pos_inf", "+Inf"): (1, "1.7976931348623157e+308"),
        ("logged model", model, "m_neg_inf", "-Inf"): (1, "-1.7976931348623157e+308"),
        # log_metric(model_id=...) logs the run metric too; a run's NaN keeps its is_nan flag.
        ("run", run, "m_pos_inf", "+Inf"): (1, "1.7976931348623157e+308"),
        ("run", run, "m_neg_inf", "-Inf"): (1, "-1.7976931348623157e+308"),
        ("run", run, "run_inf", "+Inf"): (1, "1.7976931348623157e+308"),
    }
    assert "6 metric value(s) in 6 series cannot be stored as the files hold them" in result.stdout
    assert f"logged model {model}, metric 'm_nan': 1 NaN point(s) stored as 0" in result.stdout
    # What the summary says is what the database holds.
    values = {m.key: m.value for m in sql_client(db).get_logged_model(model).metrics}
    assert (values["m_nan"], values["m_pos_inf"], values["m_neg_inf"]) == (0.0, 1.7976931348623157e308,
                                                                           -1.7976931348623157e308)
    assert math.isnan(sql_client(db).get_run(run).data.metrics["m_nan"])


def test_the_clean_database_verifies_clean_in_process(migrated):
    mlruns, db, _, _, _ = migrated
    report = verify_in_process(mlruns, db)
    assert report.ok, report.to_text()
    assert report.results["logged_models"].checked == 2


def test_a_lost_point_of_a_logged_model_metric_history(migrated, tmp_path):
    ids = migrated[2]
    report = planted(migrated, tmp_path, "DELETE FROM logged_model_metrics WHERE metric_name = 'rmse' "
                     "AND metric_step = 1")
    assert only(report) == ("logged_models", ids["model"], "metrics")
    assert report.mismatches[0].target is None  # the point is named as missing


def test_a_logged_model_metric_point_with_another_value(migrated, tmp_path):
    ids = migrated[2]
    report = planted(migrated, tmp_path, "UPDATE logged_model_metrics SET metric_value = 9 "
                     "WHERE metric_name = 'rmse' AND metric_step = 0")
    assert only(report) == ("logged_models", ids["model"], "metrics")


def test_the_step_of_a_run_metric_logged_with_a_dataset(migrated, tmp_path):
    ids = migrated[2]
    report = planted(migrated, tmp_path, "UPDATE metrics SET step = 0 WHERE key = 'with_dataset'")
    entity, id_, field = only(report)
    assert (entity, id_) == ("metrics", f"{ids['run']}/with_dataset")
    assert field.startswith("step 7 @")  # the file's step, which MLflow's reader reports as 0


def test_a_deleted_logged_model_shown_as_active(migrated, tmp_path):
    ids = migrated[2]
    report = planted(migrated, tmp_path, "UPDATE logged_models SET lifecycle_stage = 'active' "
                     "WHERE model_id = ?", ids["deleted_model"])
    assert only(report) == ("logged_models", ids["deleted_model"], "lifecycle_stage")


@pytest.mark.parametrize("column, value, which, field", [
    ("valid", 1, "overridden", "valid"),
    ("overrides", None, "overriding", "overrides"),
    ("run_id", None, "overriding", "run_id"),
    ("rationale", None, "overriding", "rationale"),
    ("run_id", None, "feedback", "run_id"),
])
def test_assessment_fields_the_reader_drops(migrated, tmp_path, column, value, which, field):
    ids = migrated[2]
    report = planted(migrated, tmp_path, f"UPDATE assessments SET {column} = ? WHERE assessment_id = ?",
                     value, ids[which])
    assert only(report) == ("assessments", ids[which], field)


@pytest.mark.parametrize("column, value", [("deleted_time", None), ("source_type", "'NOTEBOOK'")])
def test_run_columns_the_reader_drops(migrated, tmp_path, column, value):
    ids = migrated[2]
    report = planted(migrated, tmp_path, f"UPDATE runs SET {column} = {value or 'NULL'} WHERE run_uuid = ?",
                     ids["deleted_run"])
    assert only(report) == ("runs", ids["deleted_run"], column)


def test_a_model_version_storage_location(migrated, tmp_path):
    report = planted(migrated, tmp_path, "UPDATE model_versions SET storage_location = 'elsewhere' "
                     "WHERE name = 'registered'")
    assert only(report) == ("model_versions", "registered/1", "storage_location")


def test_a_logged_model_point_logged_twice_keeps_the_first(migrated, tmp_path):
    _, db, ids, _, _ = migrated
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT metric_value FROM logged_model_metrics WHERE metric_name = 'twice'").fetchall()
    finally:
        conn.close()
    assert rows == [(1.0,)]
    report = planted(migrated, tmp_path, "UPDATE logged_model_metrics SET metric_value = 2.0 "
                     "WHERE metric_name = 'twice'")
    assert only(report) == ("logged_models", ids["model"], "metrics")


@pytest.mark.parametrize("sql, params, expected", [
    # An integer enum in the file, its name through MLflow's reader.
    ("UPDATE runs SET status = 'RUNNING' WHERE run_uuid = ?", "run", ("runs", "run", "status")),
    # Two identical lines in the file, one row in the database: the history is a set.
    ("DELETE FROM metrics WHERE key = 'dup'", None, ("metrics", "run/dup", "points")),
    # A value read verbatim: a trailing newline is part of it.
    ("UPDATE params SET value = rtrim(value, char(10)) WHERE key = 'multiline'", None,
     ("params", "run", "multiline")),
    ("DELETE FROM trace_request_metadata WHERE key = 'mlflow.sourceRun'", None,
     ("traces", "trace", "mlflow.sourceRun")),
    ("UPDATE model_versions SET status = 'PENDING_REGISTRATION' WHERE name = 'registered'", None,
     ("model_versions", "registered/1", "status")),
    # Hidden from RegisteredModel.tags, and what makes a registered model a prompt.
    ("DELETE FROM registered_model_tags WHERE key = 'mlflow.prompt.is_prompt'", None,
     ("registered_models", "prompt", "mlflow.prompt.is_prompt")),
    ("DELETE FROM registered_model_aliases WHERE alias = 'champion'", None,
     ("registered_models", "registered", "champion")),
])
def test_what_the_reader_converts_or_hides(migrated, tmp_path, sql, params, expected):
    ids = migrated[2]
    report = planted(migrated, tmp_path, sql, *([ids[params]] if params else []))
    entity, id_, field = expected
    owner, _, rest = id_.partition("/")
    assert only(report) == (entity, ids.get(owner, owner) + (f"/{rest}" if rest else ""), field)


def test_the_trace_name(migrated, tmp_path):
    _, db, ids, _, _ = migrated
    conn = sqlite3.connect(db)
    try:
        columns = {r[1] for r in conn.execute("PRAGMA table_info(trace_info)")}
    finally:
        conn.close()
    # Newer MLflow keeps the trace name in a column and renders it back as the tag; older keeps
    # the tag row. Either way the tag is what a client sees, and what must match the file.
    sql = ("UPDATE trace_info SET trace_name = NULL WHERE request_id = ?" if "trace_name" in columns
           else "DELETE FROM trace_tags WHERE key = 'mlflow.traceName' AND request_id = ?")
    report = planted(migrated, tmp_path, sql, ids["trace"])
    assert only(report) == ("traces", ids["trace"], "mlflow.traceName")


@pytest.mark.parametrize("column, key", [("input_tokens", "mlflow.trace.tokenUsage"),
                                         ("session_id", "mlflow.trace.session")])
def test_trace_metadata_kept_in_columns(migrated, tmp_path, column, key):
    mlruns, db, ids, _, _ = migrated
    trace_dir = next(mlruns.glob(f"*/traces/{ids['trace']}"))
    assert (trace_dir / "request_metadata" / key).is_file()
    conn = sqlite3.connect(db)
    try:
        columns = {r[1] for r in conn.execute("PRAGMA table_info(trace_info)")}
    finally:
        conn.close()
    if column in columns:
        report = planted(migrated, tmp_path, f"UPDATE trace_info SET {column} = NULL WHERE request_id = ?",
                         ids["trace"])
        assert only(report) == ("traces", ids["trace"], column)
    else:  # older MLflow: the metadata row itself
        report = planted(migrated, tmp_path, "DELETE FROM trace_request_metadata WHERE key = ?", key)
        assert only(report) == ("traces", ids["trace"], key)


def test_etl_migrate_verify_counts_and_names_the_same_values(migrated, tmp_path):
    """`etl-migrate verify` reads them from the files itself, as the migration's load does."""
    mlruns, db, ids, _, migration = migrated
    report_path = tmp_path / "verify.json"
    result = run_cli("verify", "--source", str(mlruns), "--target", f"sqlite:///{db}", "--report", str(report_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert json.loads(report_path.read_text())["unrepresentable_values"] == migration["unrepresentable_values"]
    assert "6 metric value(s) in 6 series cannot be stored as the files hold them" in result.stdout
    assert f"logged model {ids['model']}, metric 'm_nan': 1 NaN point(s) stored as 0" in result.stdout


def test_a_five_field_line_with_the_greatest_step_is_the_latest_point(tmp_path):
    """MLflow's reader reports step 0 for a 5-field run metric line, so it picks another latest
    point than the file holds: the target's latest follows the file. The comparison through
    MLflow's clients (tests/client_compare.py, which the mutation campaign uses) knows that gap,
    and still fails a target that shows what the reader shows."""
    import mlflow
    import pandas as pd

    from tests import client_compare

    mlruns = tmp_path / "mlruns"
    exp = file_client(mlruns).create_experiment("steps")
    with default_uris(mlruns):
        dataset = mlflow.data.from_pandas(pd.DataFrame({"x": [1]}), name="d")
        with mlflow.start_run(experiment_id=exp) as run:
            mlflow.log_metric("loss", 0.5, step=0, timestamp=2000)
            # The greatest step, logged with a dataset (5 fields), at an earlier timestamp.
            mlflow.log_metric("loss", 0.25, step=9, timestamp=1000, dataset=dataset)
    run_id = run.info.run_id
    src = file_client(mlruns)
    assert src.get_run(run_id).data.metrics["loss"] == 0.5  # the reader: both at step 0
    db = tmp_path / "mlflow.db"
    result = run_cli("--source", str(mlruns), "--target", f"sqlite:///{db}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    dst = sql_client(db)
    assert dst.get_run(run_id).data.metrics["loss"] == 0.25
    assert sorted(m.step for m in dst.get_metric_history(run_id, "loss")) == [0, 9]
    client_compare.compare_runs(src, dst)

    conn = sqlite3.connect(db)
    try:
        conn.execute("UPDATE latest_metrics SET value = 0.5, step = 0, timestamp = 2000")
        conn.commit()
    finally:
        conn.close()
    with pytest.raises(AssertionError, match="latest metrics"):
        client_compare.compare_runs(src, sql_client(db))
    assert only(verify_in_process(mlruns, db)) == ("latest_metrics", run_id, "loss")


@pytest.mark.parametrize("content", ["", "5000 7.0 3\n\n", "5000 7.0 3\x0c\n"])
def test_a_metric_file_mlflow_s_reader_cannot_read_is_a_mismatch(migrated, tmp_path, content):
    """Verifying a target against a tree whose metric file MLflow's reader fails on (empty, an
    empty line, a form feed ending a line) names that series; it is no internal error."""
    mlruns, db, ids, _, _ = migrated
    copy = tmp_path / "mlruns"
    shutil.copytree(mlruns, copy)
    (next(copy.glob(f"*/{ids['run']}")) / "metrics" / "dup").write_text(content)
    assert only(verify_in_process(copy, db)) == ("metrics", f"{ids['run']}/dup", "readable by MLflow")
