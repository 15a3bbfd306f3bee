"""Small FileStore trees made through MLflow's public API, for targeted tests."""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from pathlib import Path

LONG_PARAM = "p" * 6000  # MLflow's param value limit (MAX_PARAM_VAL_LENGTH)
LONG_TAG = "t" * 8000


def file_client(mlruns: Path):
    from mlflow import MlflowClient

    uri = mlruns.as_uri()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@contextmanager
def default_uris(mlruns: Path):
    """MLflow's default tracking and registry URIs on ``mlruns`` for the block: fluent APIs, and
    the registry's lookup of a version's logged model, go through them. Restored after, and so
    is the active experiment a block sets (process-wide: a later module's runs would go there)."""
    import mlflow
    from mlflow.tracking import fluent

    experiment = os.environ.get("MLFLOW_EXPERIMENT_ID")
    mlflow.set_tracking_uri(mlruns.as_uri())
    mlflow.set_registry_uri(mlruns.as_uri())
    try:
        yield
    finally:
        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
        mlflow.set_registry_uri(os.environ["MLFLOW_TRACKING_URI"])
        fluent._active_experiment_id = None
        if experiment is None:
            os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
        else:
            os.environ["MLFLOW_EXPERIMENT_ID"] = experiment


def sql_client(db: Path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{db}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def build_core_tree(mlruns: Path) -> dict:
    """Every core entity and the edge cases of the foundation issue. Returns ids worth naming."""
    from mlflow.entities import Metric, Param

    client = file_client(mlruns)
    ids: dict = {}
    exp = client.create_experiment("核心 experiment 🚀", tags={"team": "数据", "nested/key": "v"})
    ids["experiment"] = exp
    ids["s3_experiment"] = client.create_experiment(
        "remote artifacts", artifact_location="s3://bucket/some/path"
    )

    def run(name, status="FINISHED", **kw):
        r = client.create_run(exp, run_name=name, tags=kw.get("tags"))
        if status != "RUNNING":
            client.set_terminated(r.info.run_id, status=status)
        return r.info.run_id

    full = run("full run ✓", tags={"owner": "ゆき 🌸", "path/like/key": "x", "long": LONG_TAG})
    client.log_batch(
        full,
        params=[Param("alpha", "0.1"), Param("nested/param", "n"), Param("long", LONG_PARAM),
                Param("empty", "")],
        metrics=[
            Metric("loss", 1.5, 1000, 0), Metric("loss", 0.5, 1001, 1), Metric("loss", 0.25, 1002, 2),
            Metric("nan_metric", math.nan, 1000, 0),
            Metric("pos_inf", math.inf, 1000, 0), Metric("neg_inf", -math.inf, 1000, 0),
            Metric("nested/metric", 3.0, 1000, 0),
        ],
    )
    # The same point logged twice (the FileStore appends both lines; SQL keeps one row), and a
    # second value at one step.
    client.log_metric(full, "dup", 7.0, timestamp=5000, step=3)
    client.log_metric(full, "dup", 7.0, timestamp=5000, step=3)
    client.log_metric(full, "dup", 8.0, timestamp=5001, step=3)
    ids["full_run"] = full
    ids["failed_run"] = run("failed", "FAILED")
    ids["killed_run"] = run("killed", "KILLED")
    ids["running_run"] = run("still running", "RUNNING")
    ids["empty_run"] = run("empty")
    deleted_run = run("deleted run")
    client.log_param(deleted_run, "x", "1")
    client.delete_run(deleted_run)
    ids["deleted_run"] = deleted_run

    gone = client.create_experiment("deleted experiment", tags={"why": "obsolete"})
    gone_run = client.create_run(gone, run_name="in the trash").info.run_id
    client.log_metric(gone_run, "m", 1.0, timestamp=1, step=0)
    client.set_terminated(gone_run)
    client.delete_experiment(gone)
    ids["deleted_experiment"] = gone
    ids["trash_run"] = gone_run

    client.create_registered_model("model-α", tags={"stage": "prod"}, description="the model")
    client.create_model_version("model-α", "s3://bucket/model/1", run_id=full, tags={"v": "1"})
    client.create_model_version("model-α", "s3://bucket/model/2", description="no run id")
    client.set_registered_model_alias("model-α", "champion", "1")
    client.set_registered_model_alias("model-α", "challenger", "2")
    client.create_registered_model("bare model")
    return ids


def build_training_tree(mlruns: Path) -> dict:
    """What a usual training script leaves, through MLflow's fluent API: runs with a param and a
    metric history, and one run that logs a metric and then a model. MLflow itself writes that
    metric's point twice into the run's metric file (log_model logs the run's metrics of the
    model's step again, for the model): the tree holds exact duplicate points nobody logged twice.
    Returns the ids worth naming, and the duplicated series as (run id, key)."""
    import mlflow

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):
            return model_input

    ids: dict = {"runs": []}
    with default_uris(mlruns):
        ids["experiment"] = mlflow.set_experiment("training").experiment_id
        for lr in (0.1, 0.01):
            with mlflow.start_run() as run:
                mlflow.log_param("lr", lr)
                for step in range(5):
                    mlflow.log_metric("loss", 1.0 / (step + 1) + lr, step=step)
            ids["runs"].append(run.info.run_id)
        with mlflow.start_run(run_name="with a model") as run:
            mlflow.log_metric("accuracy", 0.9)
            # pip_requirements given: inferring them starts a subprocess that imports the model.
            model = mlflow.pyfunc.log_model(name="model", python_model=Echo(), pip_requirements=["mlflow"])
        ids["model_run"] = run.info.run_id
        ids["model"] = model.model_id
        ids["runs"].append(run.info.run_id)
    ids["duplicated"] = (run.info.run_id, "accuracy")
    return ids


def build_collation_tree(mlruns: Path) -> dict:
    """Keys that differ only as MySQL's collations do not see (made through MLflow's client,
    which takes them all: FileStore folders and files compare byte by byte).

    Both MariaDB's utf8mb4_general_ci and MySQL 8's utf8mb4_0900_ai_ci hold as one: params
    ``lr``/``LR`` of a run, experiments ``Churn``/``churn``, tags ``café``/``cafe``. Only PAD SPACE
    collations (general_ci) hold tags ``a``/``a `` as one, and only general_ci two experiment
    names that differ in an emoji (it weighs every character beyond the BMP alike)."""
    client = file_client(mlruns)
    ids: dict = {}
    ids["Churn"] = client.create_experiment("Churn")
    ids["churn"] = client.create_experiment("churn")
    ids["emoji_a"] = client.create_experiment("emoji 😀")
    ids["emoji_b"] = client.create_experiment("emoji 🎉")
    plain = ids["plain"] = client.create_experiment("plain")

    def run(exp, name):
        r = client.create_run(exp, run_name=name)
        client.set_terminated(r.info.run_id)
        return r.info.run_id

    ids["case_params"] = run(ids["Churn"], "case params")
    client.log_param(ids["case_params"], "lr", "0.1")
    client.log_param(ids["case_params"], "LR", "0.2")
    ids["space_tags"] = run(plain, "space tags")
    client.set_tag(ids["space_tags"], "a", "1")
    client.set_tag(ids["space_tags"], "a ", "2")
    ids["accent_tags"] = run(plain, "accent tags")
    client.set_tag(ids["accent_tags"], "café", "1")
    client.set_tag(ids["accent_tags"], "cafe", "2")
    ids["clean"] = run(plain, "clean ✓")
    client.log_param(ids["clean"], "lr", "0.3")
    client.log_metric(ids["clean"], "loss", 0.5, timestamp=1, step=0)
    # MLflow takes model version tags of up to 100,000 characters; MySQL's TEXT column holds
    # 65,535 bytes, which 30,000 CJK characters (90,000 bytes in UTF-8) exceed.
    client.create_registered_model("big prompt")
    client.create_model_version("big prompt", "s3://bucket/big", tags={"template": "数" * 30_000})
    client.create_registered_model("small prompt")
    client.create_model_version("small prompt", "s3://bucket/small", tags={"template": "数" * 100})
    return ids
