"""MLflow's own FileStore readers, opened without their side effects.

Verification reads the source through MLflow's code, not ours, so a parsing bug of ours cannot
verify itself. MLflow's readers have three habits that matter here, all handled in this module:

1. ``FileStore.__init__`` (tracking and registry) creates ``.trash``/``models`` folders when they
   are missing: it writes to the tree it reads. We set the attributes ``__init__`` sets instead.
2. The registry reader fetches a model version's logged model through a bare ``MlflowClient()``,
   i.e. the default tracking URI (a stray ``mlflow.db`` in the working folder under MLflow 3.x).
   We point that default at a scratch file store in our cache folder.
3. For 5-field run metric lines (``ts value step dataset_name dataset_digest``) the tracking
   reader reports step 0 although the file holds the step; ``true_steps`` recovers it.
4. The tracking reader builds expectations without the ``valid`` and ``overrides`` the file
   holds (``Expectation.from_dictionary`` ignores them); ``expectation_flags`` reads them.

The target side of traces and logged models is read through MLflow's own SqlAlchemyStore on a
read-only connection (``sql_store``): what its client would show, derived columns included.
"""

from __future__ import annotations

import os
from functools import cache

from etl.sink.schema import cache_dir


@cache
def _allow_file_store() -> None:
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    scratch = cache_dir() / "scratch-tracking"
    scratch.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = scratch.as_uri()


@cache
def tracking_store(mlruns: str):
    _allow_file_store()
    from mlflow.store.tracking.abstract_store import AbstractStore
    from mlflow.store.tracking.file_store import FileStore
    from mlflow.utils.file_utils import path_to_local_file_uri

    store = FileStore.__new__(FileStore)
    AbstractStore.__init__(store)
    store.root_directory = mlruns
    store.artifact_root_uri = path_to_local_file_uri(mlruns)
    store.trash_folder = os.path.join(mlruns, FileStore.TRASH_FOLDER_NAME)
    return store


@cache
def registry_store(mlruns: str):
    _allow_file_store()
    from mlflow.store.model_registry.abstract_store import AbstractStore
    from mlflow.store.model_registry.file_store import FileStore

    store = FileStore.__new__(FileStore)
    AbstractStore.__init__(store)
    store.root_directory = mlruns
    return store


def true_steps(mlruns: str, experiment_id: str, run_id: str, key: str, metrics: list) -> list[int]:
    """Steps of a run metric's points, correcting the reader's step 0 on 5-field lines."""
    steps = [m.step for m in metrics]
    if all(m.dataset_name is None for m in metrics):
        return steps
    from mlflow.utils.file_utils import read_file_lines

    folder = os.path.join(mlruns, experiment_id, run_id, "metrics")
    if not os.path.isdir(folder):
        folder = os.path.join(mlruns, ".trash", experiment_id, run_id, "metrics")
    lines = read_file_lines(folder, key)
    return [
        int(line.strip().split(" ")[2]) if m.dataset_name is not None else m.step
        for m, line in zip(metrics, lines)
    ]


def expectation_flags(trace_dir: str, assessment_id: str) -> tuple[bool, str | None]:
    """(valid, overrides) of an expectation as its file holds them."""
    from mlflow.utils.yaml_utils import read_yaml

    data = read_yaml(os.path.join(trace_dir, "assessments"), f"{assessment_id}.yaml")
    return bool(data.get("valid", True)), data.get("overrides")


@cache
def sql_store(staging: str):
    """MLflow's SQL store on the staging file, read-only: the verifier never writes."""
    _allow_file_store()
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    logging_off()
    return SqlAlchemyStore(f"sqlite:///file:{staging}?mode=ro&uri=true", "file:///nonexistent-artifacts")


def logging_off() -> None:
    import logging

    for name in ("mlflow.store.db.utils", "alembic", "mlflow.store.tracking.sqlalchemy_store"):
        logging.getLogger(name).setLevel(logging.WARNING)
