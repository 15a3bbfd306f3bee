"""MLflow's own FileStore readers, opened without their side effects.

Verification reads the source through MLflow's code, not ours, so a parsing bug of ours cannot
verify itself. MLflow's readers have three habits that matter here, all handled in this module:

1. ``FileStore.__init__`` (tracking and registry) creates ``.trash``/``models`` folders when they
   are missing: it writes to the tree it reads. We set the attributes ``__init__`` sets instead.
2. The registry reader fetches a model version's logged model through a bare ``MlflowClient()``,
   i.e. the default tracking URI (a stray ``mlflow.db`` in the working folder under MLflow 3.x).
   We point that default at a scratch file store in our cache folder.
3. For 5-field run metric lines (``ts value step dataset_name dataset_digest``) the tracking
   reader reports step 0 although the file holds the step; ``metric_history`` recovers it.
4. The tracking reader builds assessments without fields their files hold (an expectation's
   ``valid``, ``overrides`` and ``rationale``; any ``run_id`` key); ``read_trace`` keeps each
   file's mapping beside the entity MLflow builds from it.
   Its logged models carry only the latest point of each metric and no lifecycle stage;
   ``read_logged_model`` reads every line and the meta as the file holds it.
5. The tracking reader finds a run or a trace by id by listing every experiment folder, once
   per lookup: quadratic over a whole tree; and it resolves an experiment's folder by listing
   the root on every read. ``_index_lookups`` gives the same answers from one listing per
   process (the tree does not change while it is verified).

The target side is never read through MLflow's SqlAlchemyStore (importing it costs seconds of CPU
per process): the verifier reads the tables with plain SQL (``etl.verify.connect``).
"""

from __future__ import annotations

import functools
import os
import warnings
from functools import cache

from etl.sink.target import cache_dir


@cache
def _allow_file_store() -> None:
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    # Reading the deprecated file store is the point of the tool; MLflow's deprecation warning
    # for it (printed by some releases, e.g. 3.10) would break --quiet.
    warnings.filterwarnings("ignore", message="The filesystem tracking backend", category=FutureWarning)
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
    _index_lookups(store)
    return store


def _index_lookups(store) -> None:
    """Replace the store's find-by-id scans with an index that keeps their answers and order."""
    runs: dict[str, list[tuple[str, str]]] = {}
    traces: dict[str, str] = {}

    def build() -> None:
        if runs or traces:
            return
        for exp_dir in store._get_active_experiments(True) + store._get_deleted_experiments(True):
            exp_id = os.path.basename(os.path.abspath(exp_dir))
            for name in sorted(os.listdir(exp_dir)):
                runs.setdefault(name, []).append((exp_id, os.path.join(exp_dir, name)))
            trace_dir = os.path.join(exp_dir, "traces")
            if os.path.isdir(trace_dir):
                for name in sorted(os.listdir(trace_dir)):
                    traces.setdefault(name, os.path.join(trace_dir, name))

    def find_run_root(run_uuid, validate_structure=True):
        build()
        check = getattr(store, "_is_valid_run_directory", None)
        for exp_id, run_dir in runs.get(run_uuid, ()):
            if validate_structure and check is not None and not check(run_dir):
                continue
            return exp_id, run_dir
        return None, None

    def find_trace_dir(trace_id, assert_exists=False):
        build()
        if trace_id in traces:
            return traces[trace_id]
        if assert_exists:
            from mlflow.exceptions import MlflowException

            raise MlflowException(f"Trace with ID '{trace_id}' not found")
        return None

    store._find_run_root = find_run_root
    store._find_trace_dir = find_trace_dir
    # Every per-run read resolves the experiment folder again by listing the root (and .trash).
    store._get_experiment_path = functools.cache(store._get_experiment_path)


@cache
def registry_store(mlruns: str):
    _allow_file_store()
    from mlflow.store.model_registry.abstract_store import AbstractStore
    from mlflow.store.model_registry.file_store import FileStore

    store = FileStore.__new__(FileStore)
    AbstractStore.__init__(store)
    store.root_directory = mlruns
    return store


def read_run_meta(run_dir: str):
    """(run_info, meta as the file holds it) of a run folder: ``FileStore._get_run_info_from_dir``
    with its mapping kept, since ``RunInfo`` drops ``deleted_time`` and the source fields."""
    from mlflow.store.tracking.file_store import FileStore, _read_persisted_run_info_dict

    meta = FileStore._read_yaml(run_dir, FileStore.META_DATA_FILE_NAME)
    return _read_persisted_run_info_dict(meta), meta


def read_run(store, run_dir: str):
    """(run_info, params, tags, inputs, outputs, metric keys) of a run folder.

    ``FileStore._get_run_from_info`` without the latest-metric pass: it parses every metric
    file to find each key's latest point, and the verifier parses the full histories anyway
    (``metric_history``) and applies the SQL store's latest rule to them.
    """
    from mlflow.store.tracking.file_store import _get_run_name_from_tags

    info = store._get_run_info_from_dir(run_dir)
    params = {p.key: p.value for p in store._get_all_params(info)}
    tag_list = store._get_all_tags(info)
    if not info.run_name and (name := _get_run_name_from_tags(tag_list)):
        info._set_run_name(name)
    tags = {t.key: t.value for t in tag_list}
    _, metric_keys = store._get_run_files(info, "metric")
    inputs, outputs = read_run_inputs(run_dir, store._get_experiment_path(info.experiment_id, assert_exists=True))
    return info, params, tags, inputs, outputs, metric_keys


def read_run_inputs(run_dir: str, exp_dir: str):
    """(RunInputs, RunOutputs) of a run folder: ``FileStore._get_all_inputs`` and
    ``_get_all_outputs``, each input and output read with MLflow's own record readers, over the
    folders in ``inputs/`` and ``outputs/`` only. MLflow's reader takes every entry there for an
    input's folder and fails on a loose file (a note someone left), which MLflow's own migration
    (``fs2db``: ``list_subdirs``) and the load leave out, and the census names."""
    from mlflow.entities import DatasetInput, InputTag, LoggedModelInput, LoggedModelOutput, RunInputs, RunOutputs
    from mlflow.protos.internal_pb2 import InputVertexType, OutputVertexType
    from mlflow.store.tracking.file_store import FileStore

    def folders(name: str) -> list[str]:
        parent = os.path.join(run_dir, name)
        if not os.path.exists(parent):
            return []
        return [path for entry in os.listdir(parent) if os.path.isdir(path := os.path.join(parent, entry))]

    datasets_dir = os.path.join(exp_dir, FileStore.DATASETS_FOLDER_NAME)
    # As MLflow's reader: without a datasets folder, no dataset input is read at all.
    datasets = os.listdir(datasets_dir) if os.path.exists(datasets_dir) else None
    dataset_inputs, model_inputs, model_outputs = [], [], []
    for folder in folders(FileStore.INPUTS_FOLDER_NAME):
        record = FileStore._FileStoreInput.from_yaml(folder, FileStore.META_DATA_FILE_NAME)
        if record.source_type == InputVertexType.MODEL:
            model_inputs.append(LoggedModelInput(model_id=record.source_id))
        # An input whose dataset folder is gone is skipped by MLflow's reader, with a warning.
        elif record.source_type == InputVertexType.DATASET and datasets and record.source_id in datasets:
            dataset = FileStore._get_dataset_from_dir(datasets_dir, record.source_id)
            dataset_inputs.append(DatasetInput(dataset, [InputTag(k, v) for k, v in record.tags.items()]))
    for folder in folders(FileStore.OUTPUTS_FOLDER_NAME):
        record = FileStore._FileStoreOutput.from_yaml(folder, FileStore.META_DATA_FILE_NAME)
        if record.destination_type == OutputVertexType.MODEL_OUTPUT:
            model_outputs.append(LoggedModelOutput(model_id=record.destination_id, step=record.step))
    return RunInputs(dataset_inputs=dataset_inputs, model_inputs=model_inputs), RunOutputs(model_outputs=model_outputs)


def metric_history(store, run_info, key: str) -> list[tuple[int, int, float]]:
    """A run metric's points (timestamp, step, value) through MLflow's line reader.

    This is ``FileStore.get_metric_history`` without its re-read of the run's meta.yaml per key,
    and with the step of 5-field lines taken from the line: the reader reports 0 for them.
    """
    from mlflow.store.tracking.file_store import FileStore
    from mlflow.utils.file_utils import read_file_lines

    parent, _ = store._get_run_files(run_info, "metric")
    points = []
    for line in read_file_lines(parent, key):
        m = FileStore._get_metric_from_line(run_info.run_id, key, line, run_info.experiment_id)
        step = int(line.strip().split(" ")[2]) if m.dataset_name is not None else m.step
        points.append((m.timestamp, step, m.value))
    return points


def read_logged_model(store, model_dir: str):
    """(meta as the file holds it, the model without metrics, every metric point) of a logged
    model folder.

    ``FileStore._get_model_from_dir`` keeps only the latest point per (metric, dataset)
    (``_get_model_metrics_from_file``) and drops ``lifecycle_stage`` (``LoggedModel`` has no
    such field). Here every line goes through MLflow's own line parser,
    ``FileStore._get_model_metric_from_line``, and the meta is returned as read.
    """
    from mlflow.entities import LoggedModel
    from mlflow.store.tracking.file_store import FileStore
    from mlflow.utils.file_utils import read_file_lines
    from mlflow.utils.validation import _validate_metric_name

    meta = FileStore._read_yaml(model_dir, FileStore.META_DATA_FILE_NAME)
    model = dict(meta)
    model["tags"] = store._get_all_model_tags(model_dir)
    model["params"] = {p.key: p.value for p in store._get_all_model_params(model_dir)}
    parent, names = store._get_resource_files(model_dir, FileStore.METRICS_FOLDER_NAME)
    points = []
    for name in names:
        _validate_metric_name(name)
        lines = read_file_lines(parent, name)
        if not lines:  # as MLflow's reader: an empty metric file is malformed
            raise ValueError(f"Metric '{name}' is malformed. No data found.")
        points.extend(FileStore._get_model_metric_from_line(meta["model_id"], name, line) for line in lines)
    return meta, LoggedModel.from_dictionary(model), points


def read_trace(store, trace_dir: str):
    """(trace info, [(assessment, its file as a mapping), ...]) of a trace folder.

    ``FileStore._get_trace_info_from_dir`` with each assessment file read once and kept beside
    the entity MLflow builds from it: ``Assessment.from_dictionary`` drops an expectation's
    ``valid``, ``overrides`` and ``rationale``, and every assessment's ``run_id`` key (it knows
    the run only from the ``mlflow.assessment.sourceRunId`` metadata).
    """
    from mlflow.entities import Assessment, TraceInfo
    from mlflow.store.tracking.file_store import FileStore

    info = TraceInfo.from_dict(FileStore._read_yaml(trace_dir, FileStore.TRACE_INFO_FILE_NAME))
    info.trace_metadata = store._get_dict_from_trace_sub_folder(
        trace_dir, FileStore.TRACE_TRACE_METADATA_FOLDER_NAME
    )
    info.tags = store._get_dict_from_trace_sub_folder(trace_dir, FileStore.TRACE_TAGS_FOLDER_NAME)
    folder = os.path.join(trace_dir, FileStore.ASSESSMENTS_FOLDER_NAME)
    assessments = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        raw = FileStore._read_yaml(folder, name)
        assessments.append((Assessment.from_dictionary(raw), raw))
    return info, assessments
