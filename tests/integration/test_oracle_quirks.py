"""Where MLflow's FileStore reader is wrong about its own files, the verifier's oracle says so in
one place (etl/verify/oracle.py). Each quirk is shown here on a tree MLflow's API wrote."""

from __future__ import annotations

import mlflow
import pytest
from mlflow.entities import AssessmentSource

from etl.verify import oracle
from tests.trees import file_client


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    mlruns = tmp_path_factory.mktemp("quirks") / "mlruns"
    client = file_client(mlruns)
    exp = client.create_experiment("quirks")
    run = client.create_run(exp).info.run_id
    uri = mlruns.as_uri()
    mlflow.set_tracking_uri(uri)
    try:
        dataset = mlflow.data.from_pandas(__import__("pandas").DataFrame({"x": [1]}), name="d")
        with mlflow.start_run(run_id=run):
            mlflow.log_metric("with_dataset", 1.5, step=7, dataset=dataset)
        mlflow.set_experiment(experiment_id=exp)
        with mlflow.start_span("s") as span:
            pass
        mlflow.flush_trace_async_logging()
        mlflow.log_expectation(trace_id=span.trace_id, name="e", value="yes",
                               source=AssessmentSource(source_type="HUMAN", source_id="h"))
    finally:
        mlflow.set_tracking_uri(__import__("os").environ["MLFLOW_TRACKING_URI"])
    return mlruns, exp, run, span.trace_id


def test_five_field_metric_lines_keep_their_step(tree):
    mlruns, exp, run, _ = tree
    line = next((mlruns / exp / run / "metrics").iterdir()).read_text()
    assert len(line.split()) == 5  # ts value step dataset_name dataset_digest
    reader = file_client(mlruns).get_metric_history(run, "with_dataset")
    assert [m.step for m in reader] == [0]  # MLflow's reader: step 0
    store = oracle.tracking_store(str(mlruns))
    info = store._get_run_info_from_dir(str(mlruns / exp / run))
    assert [p[1] for p in oracle.metric_history(store, info, "with_dataset")] == [7]


def test_expectation_valid_flag_comes_from_the_file(tree):
    mlruns, exp, _, trace_id = tree
    store = oracle.tracking_store(str(mlruns))
    (assessment,) = store.get_trace_info(trace_id).assessments
    assert assessment.valid is None  # MLflow's reader drops it
    _, [(entity, raw)] = oracle.read_trace(store, str(mlruns / exp / "traces" / trace_id))
    assert entity.assessment_id == assessment.assessment_id
    assert raw["valid"] is True


def test_readers_write_nothing(tmp_path, monkeypatch):
    bare = tmp_path / "mlruns"
    (bare / "0").mkdir(parents=True)
    (bare / "0" / "meta.yaml").write_text("experiment_id: '0'\nname: Default\nlifecycle_stage: active\n")
    monkeypatch.chdir(tmp_path)
    oracle.tracking_store(str(bare))._get_active_experiments()
    oracle.registry_store(str(bare))
    # MLflow's own FileStore() would have created .trash/ and models/ in the tree it reads.
    assert sorted(p.name for p in bare.iterdir()) == ["0"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlruns"]


def test_indexed_lookups_answer_as_mlflow_does(tree):
    mlruns, exp, run, trace_id = tree
    store = oracle.tracking_store(str(mlruns))
    assert store._find_run_root(run)[0] == exp
    assert store.get_run(run).info.run_id == run
    assert store._find_trace_dir(trace_id).endswith(trace_id)
    assert store._find_run_root("0" * 32) == (None, None)
