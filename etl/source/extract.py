"""One work unit -> one RowBatch: rows in the column order of ``etl.rows.COLUMNS``.

Runs in producer workers (threads or processes), so it imports nothing heavy: no MLflow, no
SQLAlchemy. A unit never emits part of an entity: if any file of a run (or a registered model)
is bad, the whole entity is left out and a Problem naming the file is reported instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta
from itertools import repeat
from operator import neg

from etl.ids import LINKED_EXPERIMENTS_TAG, relinked
from etl.rows import Problem, RowBatch, Stray, printable
from etl.source.census import survey_entity
from etl.source.layout import (
    META,
    ExperimentTarget,
    ExperimentUnit,
    ModelTarget,
    RegisteredModelUnit,
    RunsUnit,
    WorkUnit,
    is_dir,
    is_number,
    subdirs,
    tree_root,
    unit_entities,
)
from etl.source.read import (
    BAD_NAME,
    BOOLEAN,
    INTEGER,
    LIST,
    MAPPING,
    NULL,
    NUMBER,
    TEXT,
    Fields,
    SourceError,
    SourceErrors,
    bad_name,
    link_problem,
    list_files,
    outside,
    outside_warning,
    metric_db_value,
    metric_columns,
    read_key_folder,
    read_text,
    read_yaml,
)
from etl.sql_limits import Limits, check_rows

# Protobuf enum numbers MLflow's FileStore writes into run meta.yaml (mlflow/protos/service.proto:
# RunStatus, SourceType). Wire-format numbers never change, so a literal table is safe here and
# keeps MLflow out of the worker processes.
RUN_STATUS = {1: "RUNNING", 2: "SCHEDULED", 3: "FINISHED", 4: "FAILED", 5: "KILLED"}
SOURCE_TYPE = {1: "NOTEBOOK", 2: "JOB", 3: "PROJECT", 4: "LOCAL", 5: "UNKNOWN"}
LIFECYCLE_STAGES = ("active", "deleted")
RUN_NAME_TAG = "mlflow.runName"
ALIAS = re.compile(r"[\w\-]+")
# mlflow/utils/validation.py: _RUN_ID_REGEX, which every read of a run by id applies
RUN_ID = re.compile(r"[a-zA-Z0-9][\w\-]{0,255}")
VERSION_ALIAS = re.compile(r"[vV]\d+")
# Folders MLflow creates with every run, and without which its reader finds no run.
RUN_FOLDERS = ("metrics", "params", "artifacts")
# AssessmentMetadataKey.SOURCE_RUN_ID (mlflow/tracing/constant.py)
SOURCE_RUN_ID_KEY = "mlflow.assessment.sourceRunId"
# MLflow 2.x trace status names -> the TraceState values MLflow 3.x stores (TraceStatus.to_state).
TRACE_V2_STATUS = {"UNSPECIFIED": "STATE_UNSPECIFIED", "OK": "OK", "ERROR": "ERROR", "IN_PROGRESS": "IN_PROGRESS"}
LOGGED_MODEL_STATUS = {"UNSPECIFIED": 0, "PENDING": 1, "READY": 2, "FAILED": 3}

# The fields of each meta file MLflow's current reader needs (it fails without them, or shows
# another value than the database would hold) and the kinds of value MLflow writes in each.
# Older trees write some otherwise (1.x: experiment ids and run enums as integers); both are
# listed where MLflow's reader takes both.
T, I, N, B, M, L, Z = TEXT, INTEGER, NUMBER, BOOLEAN, MAPPING, LIST, NULL
EXPERIMENT_FIELDS = Fields(
    required=("experiment_id", "name", "artifact_location", "lifecycle_stage"),
    kinds={"experiment_id": (T, I), "name": (T,), "artifact_location": (T,), "lifecycle_stage": (T,),
           "creation_time": (I, Z), "last_update_time": (I, Z)},
    choices={"lifecycle_stage": frozenset(LIFECYCLE_STAGES)},
)
RUN_FIELDS = Fields(
    required=("experiment_id", "start_time", "end_time", "user_id"),
    kinds={"run_id": (T,), "run_uuid": (T,), "experiment_id": (T, I), "run_name": (T, Z),
           "source_type": (I, T), "source_name": (T, Z), "entry_point_name": (T, Z), "user_id": (T,),
           "status": (I, T), "start_time": (I,), "end_time": (I, Z), "deleted_time": (I, Z),
           "source_version": (T, Z), "lifecycle_stage": (T,), "artifact_uri": (T, Z)},
    choices={"lifecycle_stage": frozenset(LIFECYCLE_STAGES)},
    why={key: "MLflow's reader cannot read a run without it (RunInfo: cannot be None)" for key in ("start_time", "user_id")},
)
# mlflow/protos/service.proto: InputVertexType, OutputVertexType
INPUT_FIELDS = Fields(
    required=("source_type", "source_id", "destination_type", "destination_id", "tags"),
    kinds={"source_type": (T,), "source_id": (T,), "destination_type": (T,), "destination_id": (T,),
           "tags": (M,)},
    choices={"source_type": frozenset({"DATASET", "MODEL"}), "destination_type": frozenset({"RUN", "DATASET", "MODEL"})},
)
OUTPUT_FIELDS = Fields(
    required=(*INPUT_FIELDS.required, "step"),
    kinds={**INPUT_FIELDS.kinds, "step": (I,)},
    # MLflow's reader shows only model outputs, and skips any other.
    choices={"source_type": frozenset({"RUN_OUTPUT"}), "destination_type": frozenset({"MODEL_OUTPUT"})},
)
DATASET_FIELDS = Fields(
    required=("name", "digest", "source_type", "source"),
    kinds={"name": (T,), "digest": (T,), "source_type": (T,), "source": (T,), "schema": (T, Z), "profile": (T, Z)},
)
TRACE_STATES = frozenset({"STATE_UNSPECIFIED", "OK", "ERROR", "IN_PROGRESS"})
TRACE_V2_FIELDS = Fields(
    required=("request_id", "experiment_id", "timestamp_ms", "execution_time_ms", "status"),
    kinds={"request_id": (T,), "experiment_id": (T, I), "timestamp_ms": (I,), "execution_time_ms": (I, Z),
           "status": (T,)},
    choices={"status": frozenset(TRACE_V2_STATUS)},
)
TRACE_FIELDS = Fields(
    required=("trace_id", "request_time", "state", "trace_location"),
    kinds={"trace_id": (T,), "request_time": (T,), "state": (T,), "trace_location": (M,),
           "execution_duration_ms": (I, Z), "client_request_id": (T, Z), "request_preview": (T, Z),
           "response_preview": (T, Z)},
    choices={"state": TRACE_STATES},
)
TRACE_LOCATION_FIELDS = Fields(required=("type",), kinds={"type": (T,), "mlflow_experiment": (M, Z)})
ASSESSMENT_FIELDS = Fields(
    required=("assessment_id", "assessment_name", "trace_id", "create_time", "last_update_time", "source"),
    kinds={"assessment_id": (T,), "assessment_name": (T,), "trace_id": (T,), "create_time": (T,),
           "last_update_time": (T,), "source": (M,), "feedback": (M,), "expectation": (M,),
           "rationale": (T, Z), "metadata": (M, Z), "span_id": (T, Z), "valid": (B,), "overrides": (T, Z),
           "run_id": (T, Z)},
)
# AssessmentSource(**source): any other key fails MLflow's reader; no source_id reads as "default".
ASSESSMENT_SOURCE_FIELDS = Fields(
    required=("source_type",), kinds={"source_type": (T,), "source_id": (T, Z)},
    choices={"source_type": frozenset({"SOURCE_TYPE_UNSPECIFIED", "HUMAN", "LLM_JUDGE", "CODE"})},
)
LOGGED_MODEL_FIELDS = Fields(
    required=("model_id", "experiment_id", "name", "artifact_location", "creation_timestamp",
              "last_updated_timestamp"),
    kinds={"model_id": (T,), "experiment_id": (T, I), "name": (T,), "artifact_location": (T,),
           "creation_timestamp": (I,), "last_updated_timestamp": (I,), "status": (I, T), "lifecycle_stage": (T,),
           "model_type": (T, Z), "source_run_id": (T, Z), "status_message": (T, Z)},
    choices={"lifecycle_stage": frozenset(LIFECYCLE_STAGES)},
)
REGISTERED_MODEL_FIELDS = Fields(
    required=("name",),
    kinds={"name": (T,), "creation_timestamp": (I, Z), "last_updated_timestamp": (I, Z), "description": (T, Z)},
)
# mlflow/protos/model_registry.proto: ModelVersionStatus
# current_stage: every MLflow writes it ('None' for no stage). Without it, or null, MLflow's
# FileStore reader shows the stage None, which its database cannot show: its SQL store reads
# versions WHERE current_stage != 'Deleted_Internal', which a NULL never passes, so such a
# version would vanish; and 'None' (what MLflow's own migrate-filestore writes) is not what the
# reader shows.
MODEL_VERSION_FIELDS = Fields(
    required=("name", "version", "creation_timestamp", "current_stage"),
    kinds={"name": (T,), "version": (I, T), "creation_timestamp": (I, Z), "last_updated_timestamp": (I, Z),
           "description": (T, Z), "user_id": (T, Z), "current_stage": (T,), "source": (T, Z),
           "run_id": (T, Z), "status": (T,), "status_message": (T, Z), "run_link": (T, Z),
           "storage_location": (T, Z)},
    choices={"status": frozenset({"PENDING_REGISTRATION", "FAILED_REGISTRATION", "READY"})},
    why={"current_stage": "MLflow writes a stage on every version, 'None' for none; a version without "
                          "one is shown by MLflow's file reader, never by its database"},
)

# The FileStore keeps no ids for datasets and run inputs (the SQL store makes uuid4s). Ours are
# uuid5s of the folders that hold them, so the same tree always gives the same rows.
ID_NAMESPACE = uuid.UUID("6f1d2a3e-5b7c-4e8f-9a0b-1c2d3e4f5a6b")


def stable_id(*parts: str) -> str:
    # printable: a folder whose name is no UTF-8 is reported, but may still be looked up.
    return str(uuid.uuid5(ID_NAMESPACE, printable("/".join(parts))))


def own_dataset_id(namespace: str, exp_id: str, folder: str) -> str:
    """The id of the row an experiment's dataset folder ``folder`` gives (a later tree's in a
    ``namespace`` of its own, see etl.source.merge)."""
    return stable_id(*([namespace] if namespace else []), exp_id, "datasets", folder)


def dataset_id(target: ExperimentTarget | None, exp_id: str, folder: str) -> str:
    """The id a run's input of that dataset refers to: its own row's, or that of the dataset of
    the same name and digest in the experiment it joins (written once)."""
    same = dict(target.same_datasets).get(folder) if target is not None else None
    return same or own_dataset_id(target.namespace if target else "", exp_id, folder)


def extract(unit: WorkUnit, limits: Limits) -> RowBatch:
    """The unit's rows; an entity that does not read, or holds a value the target would refuse
    (``limits``, supplied by the target), is left out and its problems reported instead."""
    batch = RowBatch(root=tree_root(unit))
    extractors = {"runs": _extract_run, "experiments": _extract_experiment, "traces": _extract_trace,
                  "logged_models": _extract_logged_model, "registered_models": _extract_registered_model}
    # The runs of a unit may be of several experiments: each run's RunFolder names its own.
    runs = iter(unit.runs) if isinstance(unit, RunsUnit) else None
    offset = 0
    for kind, entity_id, folder in unit_entities(unit):
        batch.folders += kind != "experiments"
        if isinstance(unit, ExperimentUnit):
            args = (unit.path, unit.deleted, _target_id(unit.target, os.path.basename(unit.path)), unit.target)
        elif isinstance(unit, RegisteredModelUnit):
            args, offset = (unit.path, unit.target, dict(unit.renumbered)), unit.target.version_offset if unit.target else 0
        else:
            place = next(runs) if runs is not None else unit
            args = (place.experiment_path, place.experiment_id, entity_id,
                    _target_id(place.target, place.experiment_id))
            if kind == "runs":
                args += (place.target,)
        _guarded(batch, limits, (kind, entity_id), folder, extractors[kind], *args, version_offset=offset)
    if isinstance(unit, ExperimentUnit):
        _extract_datasets(batch, limits, unit.path, unit.target)
        if unit.target is not None:
            _keep_for_target(batch, unit.target, os.path.basename(unit.path))
    if isinstance(unit, RegisteredModelUnit) and unit.target is not None and unit.target.left_out:
        batch.rows.clear()  # read (the census counts its files), never written
    return batch


def _keep_for_target(batch: RowBatch, target: ExperimentTarget, exp_id: str) -> None:
    """Of an experiment's own rows, those the target takes: none of one left out; of one that
    joins another, no experiment row, and the tags and datasets that one lacks."""
    if target.left_out:
        batch.rows.clear()
        return
    if target.joins:
        batch.rows.pop("experiments", None)
    if target.skip_tags and "experiment_tags" in batch.rows:
        batch.rows["experiment_tags"] = [r for r in batch.rows["experiment_tags"] if r[1] not in target.skip_tags]
    not_written = {own_dataset_id(target.namespace, exp_id, folder) for folder, _ in target.same_datasets}
    if not_written and "datasets" in batch.rows:
        batch.rows["datasets"] = [r for r in batch.rows["datasets"] if r[0] not in not_written]


def _target_id(target: ExperimentTarget | None, folder_id: str) -> int:
    """The experiment id the rows get: the folder's, unless the target gives it another. (A
    folder is named by ASCII digits: etl.source.layout lists no other.)"""
    return int(folder_id) if target is None else target.id


def _guarded(batch: RowBatch, limits: Limits, entity: tuple[str, str], folder: str, extractor, *args,
             version_offset: int = 0) -> None:
    """Run one entity's extractor into a private batch; keep its rows only if it all read, its
    folders hold nothing the census cannot classify, and the target accepts every value.
    Files read, and the census of the entity's folders, count whether or not it is kept.
    (``version_offset``: what the rows add to a model version's number, see
    etl.source.layout.ModelTarget.)"""
    own = RowBatch(root=batch.root)
    errors = _folder_errors(folder, own)
    if not errors:
        try:
            extractor(own, *args)
            for v in check_rows(own.rows, limits):
                path, line = _located(folder, v.table, own.rows[v.table], v.index, version_offset)
                errors.append(SourceError(path, v.reason, line))
        except (SourceError, SourceErrors) as e:
            errors = e.errors if isinstance(e, SourceErrors) else [e]
        if entity[0] != "datasets":  # a dataset's folder is surveyed with its experiment's
            survey_entity(entity[0], folder, own.census, False, batch.root)
    problems = [Problem(e.path, e.reason, e.line, *entity) for e in errors]
    problems += [replace(p, entity=entity[0], entity_id=entity[1]) for p in own.census.problems]
    _count_files(batch, own)
    if problems:
        batch.problems.extend(problems)
        return
    for table, rows in own.rows.items():
        batch.extend(table, rows)
    batch.lossy.update(own.lossy)
    batch.duplicates.update(own.duplicates)


def _folder_errors(folder: str, batch: RowBatch) -> list[SourceError]:
    """An entity folder the load cannot take as one: its name is no UTF-8 (no column can hold
    its id), or it is a symlink loop. A link out of the tree is read, and flagged."""
    if bad_name(os.path.basename(folder)):
        return [SourceError(folder, BAD_NAME)]
    if os.path.islink(folder):
        problem = link_problem(folder)
        if problem is not None:
            return [SourceError(folder, problem)]
        real = outside(folder, batch.root)
        if real is not None:
            batch.census.flagged.append(Stray(folder, True, outside_warning(real)))
    return []


def _count_files(batch: RowBatch, own: RowBatch) -> None:
    """An entity's files were read (and are FileStore data) whether or not it is kept."""
    batch.files += own.files
    own.census.problems = []  # reported as the entity's problems
    batch.census.merge(own.census)


# The file each table's row comes from, relative to its entity's folder (row -> path parts).
_SOURCE_FILES = {
    "experiments": lambda row: [META],
    "experiment_tags": lambda row: ["tags", row[1]],
    "datasets": lambda row: [META],
    "runs": lambda row: [META],
    "params": lambda row: ["params", row[1]],
    "tags": lambda row: ["tags", row[1]],
    "metrics": lambda row: ["metrics", row[1]],
    "latest_metrics": lambda row: ["metrics", row[1]],
    "trace_info": lambda row: ["trace_info.yaml"],
    "trace_tags": lambda row: ["tags", row[1]],
    "trace_request_metadata": lambda row: ["request_metadata", row[1]],
    "assessments": lambda row: ["assessments", f"{row['assessment_id']}.yaml"],
    "logged_models": lambda row: [META],
    "logged_model_params": lambda row: ["params", row[2]],
    "logged_model_tags": lambda row: ["tags", row[2]],
    "logged_model_metrics": lambda row: ["metrics", row[1]],
    "registered_models": lambda row: [META],
    "registered_model_tags": lambda row: ["tags", row[1]],
    "registered_model_aliases": lambda row: ["aliases", row[1]],
    "model_versions": lambda row: [f"version-{row[1]}", META],
    "model_version_tags": lambda row: [f"version-{row[1]}", "tags", row[2]],
}
# Metric files hold one point per line, in the order their rows were made: the line of a row is
# its place among the rows of the same key (the column named here).
_LINE_KEY = {"metrics": 1, "logged_model_metrics": 1}


def _located(folder: str, table: str, rows: list, index: int, version_offset: int = 0) -> tuple[str, int | None]:
    """(file, line) a row was read from; only computed for a row the target would refuse."""
    row = rows[index]
    if table in ("model_versions", "model_version_tags"):
        row = (row[0], row[1] - version_offset, *row[2:])  # the folder has the file's number
    if table in ("inputs", "input_tags"):
        return input_file(folder, row[0]), None
    path = os.path.join(folder, *_SOURCE_FILES[table](row))
    if table in _LINE_KEY:
        key_at = _LINE_KEY[table]
        return path, sum(1 for r in rows[:index] if r[key_at] == row[key_at]) + 1
    return path, None


def source_file(folder: str, table: str, row) -> str:
    """The file of an entity's folder a row was read from."""
    return _located(folder, table, [row], 0)[0]


def input_file(run_path: str, input_uuid: str) -> str:
    """The meta.yaml of the run input or output whose stable id is input_uuid."""
    run_id = os.path.basename(run_path)
    for kind in ("inputs", "outputs"):
        for name in subdirs(os.path.join(run_path, kind)):
            if stable_id(run_id, kind, name) == input_uuid:
                return os.path.join(run_path, kind, name, META)
    return run_path


def _meta(batch: RowBatch, folder: str, what: str, table: str, fields: Fields | None = None) -> dict:
    """The folder's meta.yaml, every field ``fields`` asks for present and of its kind."""
    path = os.path.join(folder, META)
    if not os.path.lexists(path):
        try:
            os.scandir(folder).close()
        except PermissionError as e:  # a folder this user may not enter: the meta.yaml may be there
            raise SourceError(folder, f"cannot list folder: {e.strerror}") from None
        except OSError:
            pass
        raise SourceError(path, f"missing {META} in {what} folder")
    if os.path.isdir(path):
        raise SourceError(path, "a folder where MLflow writes a file")
    batch.read(table)
    meta = read_yaml(path)
    if fields is not None:
        fields.check(meta, path)
    return meta


def _key_folder(batch: RowBatch, folder: str, table: str) -> dict[str, str]:
    values = read_key_folder(folder, batch.census, batch.root)
    batch.read(table, len(values))
    return values


def _required(meta: dict, field: str, path: str):
    value = meta.get(field)
    if value is None or value == "":
        raise SourceError(path, f"required field '{field}' is missing")
    return value


def _mapping(value, field: str, path: str) -> dict:
    if not isinstance(value, dict):
        raise SourceError(path, f"{field} must be a mapping, found {type(value).__name__}")
    return value


def _lifecycle(meta: dict, path: str, default: str) -> str:
    stage = meta.get("lifecycle_stage") or default
    if stage not in LIFECYCLE_STAGES:
        raise SourceError(path, f"unknown lifecycle_stage {stage!r}")
    return stage


def _extract_experiment(batch: RowBatch, path: str, deleted: bool, target_id: int,
                        target: ExperimentTarget | None) -> None:
    meta = _meta(batch, path, "experiment", "experiments", EXPERIMENT_FIELDS)
    meta_path = os.path.join(path, META)
    folder_id = os.path.basename(path)
    exp_id = str(_required(meta, "experiment_id", meta_path))
    if exp_id != folder_id:
        raise SourceError(
            meta_path, f"experiment_id {exp_id!r} disagrees with its folder name {folder_id!r}"
        )
    name = _required(meta, "name", meta_path)
    batch.add(
        "experiments",
        (
            target_id,
            target.name if target is not None and target.name is not None else name,
            meta["artifact_location"],
            # MLflow 1.x and 2.1 deleted an experiment by moving its folder to .trash/, leaving
            # meta.yaml saying active: every listing of MLflow's reader goes by the folder.
            "deleted" if deleted else meta["lifecycle_stage"],
            meta.get("creation_time"),
            meta.get("last_update_time"),
        ),
    )
    # Tags live in tags/ only; a deleted experiment's meta.yaml also carries a stale copy.
    tags = _key_folder(batch, os.path.join(path, "tags"), "experiment_tags")
    batch.extend("experiment_tags", [(target_id, k, v) for k, v in tags.items()])


def _enum(value, table: dict[int, str], field: str, path: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        if value in table:
            return table[value]
    elif isinstance(value, str) and value in table.values():
        return value
    raise SourceError(path, f"unknown {field} {value!r}")


def _extract_run(batch: RowBatch, exp_path: str, exp_id: str, name: str, target_id: int,
                 target: ExperimentTarget | None) -> None:
    run_path = os.path.join(exp_path, name)
    meta = _meta(batch, run_path, "run", "runs", RUN_FIELDS)
    meta_path = os.path.join(run_path, META)
    run_id = meta.get("run_id")
    if not run_id and meta.get("run_uuid"):
        # MLflow 0.x wrote run_uuid alone; 1.0 and later write run_id too (and rewrite the file
        # whenever a run changes), and MLflow 3's reader cannot read a run without it.
        raise SourceError(meta_path, "run_uuid without run_id: a run of MLflow 0.x that no later "
                          "MLflow rewrote, which MLflow's reader cannot read")
    if not run_id:
        raise SourceError(meta_path, "required field 'run_id' is missing")
    if run_id != name:
        raise SourceError(meta_path, f"run_id {run_id!r} disagrees with its folder name {name!r}")
    if not RUN_ID.fullmatch(run_id):
        raise SourceError(meta_path, f"run_id {run_id!r} is no run id MLflow's reader takes (a letter or "
                          "digit, then up to 255 letters, digits, '_' or '-')")
    meta_exp = str(meta.get("experiment_id", ""))
    if meta_exp != exp_id:
        raise SourceError(
            meta_path,
            f"run belongs to experiment {meta_exp!r} but sits in experiment folder {exp_id!r}",
        )
    for part in RUN_FOLDERS:
        if not os.path.isdir(os.path.join(run_path, part)):
            # MLflow's reader takes such a folder for no run (FileStore._is_valid_run_directory).
            raise SourceError(os.path.join(run_path, part), "missing: every run folder MLflow writes has it")
    status = _enum(meta.get("status", 1), RUN_STATUS, "status", meta_path)
    source_type = _enum(meta.get("source_type", 4), SOURCE_TYPE, "source_type", meta_path)

    # Every bad file of the run is reported, so read all of its parts before giving up.
    errors: list[SourceError] = []
    params = _collecting(errors, {}, _key_folder, batch, os.path.join(run_path, "params"), "params")
    tags = _collecting(errors, {}, _key_folder, batch, os.path.join(run_path, "tags"), "tags")
    metric_rows, latest_rows = _collecting(
        errors, ([], []), _run_metrics, batch, os.path.join(run_path, "metrics"), run_id
    )

    # MLflow's reader: meta.yaml's run_name, else the mlflow.runName tag (where MLflow < 1.30
    # kept a run's name), else none at all: a run MLflow <= 1.28 made without a name has
    # neither (its `name: ''` is a field no reader uses), and MLflow shows None.
    name = meta.get("run_name")
    if not name and tags.get(RUN_NAME_TAG):
        name = tags[RUN_NAME_TAG]
    batch.add(
        "runs",
        (
            run_id,
            name,
            source_type,
            meta.get("source_name", ""),
            meta.get("entry_point_name", ""),
            meta.get("user_id"),
            status,
            meta.get("start_time"),
            meta.get("end_time"),
            meta.get("deleted_time"),
            meta.get("source_version", ""),
            _lifecycle(meta, meta_path, "active"),
            meta.get("artifact_uri"),
            target_id,
        ),
    )
    _collecting(errors, None, _run_inputs, batch, exp_path, exp_id, run_path, run_id, target)
    _collecting(errors, None, _run_outputs, batch, run_path, run_id)
    if errors:
        raise SourceErrors(errors)
    batch.extend("params", [(run_id, k, v) for k, v in params.items()])
    batch.extend("tags", [(run_id, k, v) for k, v in tags.items()])
    batch.extend("metrics", metric_rows)
    batch.extend("latest_metrics", latest_rows)


def _collecting(errors: list, fallback, func, *args):
    """func(*args), or fallback with its errors added to ``errors``."""
    try:
        return func(*args)
    except SourceError as e:
        errors.append(e)
    except SourceErrors as e:
        errors.extend(e.errors)
    return fallback


# The names FileStore gives a run input's folder (a uuid4's hex) and a run output's (the logged
# model's id): a file under such a name is that input or output, lost.
INPUT_FOLDER = re.compile(r"[0-9a-f]{32}")
OUTPUT_FOLDER = re.compile(r"m-[0-9a-f]{32}")


def _no_entry_as_file(folder: str, name: re.Pattern, what: str) -> None:
    """A file where FileStore writes a run input's (or output's) folder: MLflow's reader, which
    reads every entry there as such a folder, cannot read the run. Other files there (a note) are
    not FileStore data: the census names them, and the run migrates without them."""
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(folder):
            if name.fullmatch(entry.name) and not is_dir(entry):
                raise SourceError(entry.path, f"a file where FileStore writes a {what}'s folder; MLflow's "
                                  "reader cannot read this run")


def _run_inputs(batch: RowBatch, exp_path: str, exp_id: str, run_path: str, run_id: str,
                target: ExperimentTarget | None) -> None:
    folder = os.path.join(run_path, "inputs")
    _no_entry_as_file(folder, INPUT_FOLDER, "run input")
    # The target keys an input by what it links; two folders linking the same pair were copied.
    linked: dict[tuple, str] = {}
    for name in subdirs(folder):
        meta = _meta(batch, os.path.join(folder, name), "run input", "inputs", INPUT_FIELDS)
        meta_path = os.path.join(folder, name, META)
        source_type = meta["source_type"]
        source_id = meta["source_id"]
        input_uuid = stable_id(run_id, "inputs", name)
        if source_type == "DATASET":
            if not os.path.isfile(os.path.join(exp_path, "datasets", source_id, META)):
                raise SourceError(meta_path, f"input refers to dataset {source_id}, which does not exist")
            # destination_id in the file repeats the dataset id (a FileStore writer slip);
            # the run is the folder the input sits in.
            row = (input_uuid, "DATASET", dataset_id(target, exp_id, source_id), "RUN", run_id, 0)
            tags = meta["tags"]
            wrong = [(k, v) for k, v in tags.items() if not (isinstance(k, str) and isinstance(v, str))]
            if wrong:
                raise SourceError(meta_path, f"input tag {wrong[0][0]!r}: {wrong[0][1]!r}: tag keys and "
                                  "values must be text")
            batch.extend("input_tags", [(input_uuid, k, v) for k, v in tags.items()])
        elif source_type == "MODEL":
            row = (input_uuid, "RUN_INPUT", run_id, "MODEL_INPUT", source_id, 0)
        else:
            raise SourceError(meta_path, f"unknown input source_type {source_type!r}")
        first = linked.setdefault(row[1:5], meta_path)
        if first != meta_path:
            raise SourceError(meta_path, f"links the same {source_type.lower()} {source_id} as {first}; "
                              "the target holds one input per link")
        batch.add("inputs", row)


def _run_outputs(batch: RowBatch, run_path: str, run_id: str) -> None:
    folder = os.path.join(run_path, "outputs")
    _no_entry_as_file(folder, OUTPUT_FOLDER, "run output")
    for model_id in subdirs(folder):
        meta = _meta(batch, os.path.join(folder, model_id), "run output", "inputs", OUTPUT_FIELDS)
        if meta["destination_id"] != model_id:
            raise SourceError(os.path.join(folder, model_id, META), f"destination_id "
                              f"{meta['destination_id']!r} disagrees with its folder name {model_id!r}")
        step = meta["step"]
        batch.add(
            "inputs",
            (stable_id(run_id, "outputs", model_id), "RUN_OUTPUT", run_id, "MODEL_OUTPUT", model_id, step),
        )


def _extract_datasets(batch: RowBatch, limits: Limits, exp_path: str, target: ExperimentTarget | None) -> None:
    exp_id = os.path.basename(exp_path)
    target_id = _target_id(target, exp_id)
    folder = os.path.join(exp_path, "datasets")
    names = subdirs(folder)
    ids = {name: own_dataset_id(target.namespace if target else "", exp_id, name) for name in names}
    for name in names:
        _guarded(batch, limits, ("datasets", f"{exp_id}/{name}"), os.path.join(folder, name),
                 _extract_dataset, folder, name, ids[name], target_id)
    # The target keys datasets by (experiment, name, digest); FileStore names their folders by a
    # hash of the same, so two folders with one key were copied by hand: neither is kept.
    by_key: dict[tuple, list[str]] = {}
    for name in names:
        row = next((r for r in batch.rows.get("datasets", ()) if r[0] == ids[name]), None)
        if row is not None:
            by_key.setdefault((row[2], row[3]), []).append(name)
    clashing = {name for names_ in by_key.values() if len(names_) > 1 for name in names_}
    for (ds_name, digest), names_ in by_key.items():
        if len(names_) < 2:
            continue
        for name in names_:
            others = ", ".join(os.path.join(folder, o) for o in names_ if o != name)
            batch.problems.append(Problem(
                os.path.join(folder, name, META),
                f"dataset {ds_name!r} (digest {digest}) is also in {others}; the target holds it once",
                None, "datasets", f"{exp_id}/{name}"))
    if clashing:
        dropped = {ids[n] for n in clashing}
        batch.rows["datasets"] = [r for r in batch.rows["datasets"] if r[0] not in dropped]


def _extract_dataset(batch: RowBatch, folder: str, name: str, dataset_uuid: str, target_id: int) -> None:
    meta = _meta(batch, os.path.join(folder, name), "dataset", "datasets", DATASET_FIELDS)
    batch.add(
        "datasets",
        (
            dataset_uuid,
            target_id,
            meta["name"],
            meta["digest"],
            meta["source_type"],
            meta["source"],
            meta.get("schema"),
            meta.get("profile"),
        ),
    )


# --- traces -----------------------------------------------------------------------------------

# What protobuf's Timestamp.FromJsonString (MLflow's reader of these times) takes, as MLflow writes
# it: a zone is required (without one protobuf takes the date's last '-' for the offset and
# fails), at most 9 fractional digits, an offset as hours:minutes.
_ISO = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(?:Z|([+-])(\d+):(\d+))")
_EPOCH = datetime(1970, 1, 1)
# google/protobuf/internal/well_known_types.py: _TIMESTAMP_SECONDS_MIN/MAX (0001-01-01 to 9999-12-31)
_TIMESTAMP_SECONDS = (-62135596800, 253402300799)


def iso_to_ms(text, path: str) -> int:
    """A protobuf JSON timestamp as epoch ms, read as MLflow's reader reads it (sub-ms digits
    truncated); anything it refuses is invalid input."""
    match = _ISO.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise SourceError(path, f"timestamp {text!r} is not an RFC 3339 time with a zone (as MLflow writes "
                          "'2024-01-31T12:00:00.123Z')")
    try:
        naive = datetime(*map(int, match.group(1, 2, 3, 4, 5, 6)))
    except ValueError as e:
        raise SourceError(path, f"timestamp {text!r} is no date and time: {e}") from None
    seconds = (naive - _EPOCH) // timedelta(seconds=1)
    if match[8]:
        offset = (int(match[9]) * 60 + int(match[10])) * 60
        seconds += -offset if match[8] == "+" else offset
    if not _TIMESTAMP_SECONDS[0] <= seconds <= _TIMESTAMP_SECONDS[1]:
        raise SourceError(path, f"timestamp {text!r} is outside the years 1 to 9999 MLflow's reader takes")
    return seconds * 1000 + int((match[7] or "0")[:3].ljust(3, "0"))


def _extract_trace(batch: RowBatch, exp_path: str, exp_id: str, name: str, target_id: int) -> None:
    trace_dir = os.path.join(exp_path, "traces", name)
    info_path = os.path.join(trace_dir, "trace_info.yaml")
    if not os.path.isfile(info_path):
        raise SourceError(trace_dir, "trace folder without trace_info.yaml")
    meta = read_yaml(info_path)
    batch.read("trace_info")
    if "request_id" in meta:  # MLflow 2.x layout
        TRACE_V2_FIELDS.check(meta, info_path)
        trace_id = meta["request_id"]
        trace_exp = str(meta["experiment_id"])
        timestamp = meta["timestamp_ms"]
        duration = meta["execution_time_ms"]
        status = TRACE_V2_STATUS[meta["status"]]
        previews = (None, None, None)
    else:
        TRACE_FIELDS.check(meta, info_path)
        location = meta["trace_location"]
        TRACE_LOCATION_FIELDS.check(location, info_path, "trace_location.")
        trace_exp = (location.get("mlflow_experiment") or {}).get("experiment_id", exp_id)
        trace_id = meta["trace_id"]
        timestamp = iso_to_ms(meta["request_time"], info_path)
        duration = meta.get("execution_duration_ms")
        status = meta["state"]
        previews = (meta.get("client_request_id"), meta.get("request_preview"), meta.get("response_preview"))
    if str(trace_exp) != exp_id:
        raise SourceError(info_path, f"the trace names experiment {trace_exp!r}, but sits in experiment "
                          f"folder {exp_id!r}")
    if trace_id != name:
        raise SourceError(info_path, f"trace id {trace_id!r} disagrees with its folder name {name!r}")

    tags = _key_folder(batch, os.path.join(trace_dir, "tags"), "trace_tags")
    metadata = _key_folder(batch, os.path.join(trace_dir, "request_metadata"), "trace_request_metadata")
    row = {
        "request_id": trace_id,
        "experiment_id": target_id,
        "timestamp_ms": timestamp,
        # 0 is a real duration (2.x writes it for fast traces); only a missing one is None.
        "execution_time_ms": duration,
        "status": status,
        "client_request_id": previews[0],
        "request_preview": previews[1],
        "response_preview": previews[2],
    }
    batch.add("trace_info", row)  # derived columns: etl.source.derived.apply, in the main process
    batch.extend("trace_tags", [(trace_id, k, v) for k, v in tags.items()])
    batch.extend("trace_request_metadata", [(trace_id, k, v) for k, v in metadata.items()])

    # Each file is named by its assessment's id (checked), so no id is in two files of a trace.
    # Every bad file of the trace is reported, not only the first.
    folder = os.path.join(trace_dir, "assessments")
    errors: list[SourceError] = []
    for file_name in sorted(list_files(folder, batch.census, batch.root, keys=False)):
        _collecting(errors, None, _extract_assessment, batch, os.path.join(folder, file_name), trace_id,
                    target_id, row["timestamp_ms"])
    if errors:
        raise SourceErrors(errors)


def _extract_assessment(batch: RowBatch, path: str, trace_id: str, exp_id: int, trace_ms: int) -> None:
    meta = read_yaml(path)
    batch.read("assessments")
    ASSESSMENT_FIELDS.check(meta, path)
    if meta["trace_id"] != trace_id:
        raise SourceError(path, f"trace_id {meta['trace_id']!r} disagrees with its trace folder {trace_id!r}")
    file_id = os.path.basename(path).rsplit(".", 1)[0]
    if meta["assessment_id"] != file_id:
        raise SourceError(path, f"assessment_id {meta['assessment_id']!r} disagrees with its file name")
    if ("feedback" in meta) == ("expectation" in meta):
        raise SourceError(path, "an assessment holds either feedback or an expectation")
    source = meta["source"]
    ASSESSMENT_SOURCE_FIELDS.check(source, path, "source.")
    if set(source) - {"source_type", "source_id"}:
        raise SourceError(path, f"source holds keys MLflow's reader does not take: "
                          f"{sorted(map(str, set(source) - {'source_type', 'source_id'}))}")
    if "feedback" in meta:
        kind, body = "feedback", meta["feedback"]
        if "value" not in body:
            raise SourceError(path, "required field 'feedback.value' is missing")
        value = body["value"]
        error = body.get("error") and _mapping(body["error"], "feedback.error", path)
        error_json = (
            json.dumps({"error_code": error.get("error_code"), "error_message": error.get("error_message"),
                        "stack_trace": error.get("stack_trace")})
            if error else None
        )
    else:
        kind, body = "expectation", meta["expectation"]
        if "value" not in body and "serialized_value" not in body:
            raise SourceError(path, "required field 'expectation.value' is missing")
        error_json = None
        serialized = body.get("serialized_value")
        if serialized is not None:
            _mapping(serialized, "expectation.serialized_value", path)
            # Dict and list expectations are stored as a JSON string; the value is what it holds.
            if serialized.get("serialization_format") != "JSON_FORMAT":
                raise SourceError(path, f"unknown serialization_format {serialized.get('serialization_format')!r}")
            try:
                value = json.loads(serialized["value"])
            except (KeyError, TypeError, ValueError) as e:
                raise SourceError(path, f"serialized expectation value is not JSON: {e}") from None
        else:
            value = body.get("value")
    created = iso_to_ms(meta["create_time"], path)
    updated = iso_to_ms(meta["last_update_time"], path)
    metadata = meta.get("metadata")
    row = {
        "assessment_id": meta["assessment_id"],
        "trace_id": trace_id,
        "name": meta["assessment_name"],
        "assessment_type": kind,
        "value": json.dumps(value),
        "error": error_json,
        "created_timestamp": created,
        "last_updated_timestamp": updated,
        "source_type": source["source_type"],
        # AssessmentSource's own default, which MLflow's reader shows for a source without one
        "source_id": source.get("source_id", "default"),
        # MLflow's Assessment entity takes the run from this metadata key when the file has no
        # run_id (its proto has none), and its SQL store writes that run into the column.
        "run_id": meta.get("run_id") or (metadata or {}).get(SOURCE_RUN_ID_KEY),
        "span_id": meta.get("span_id"),
        "rationale": meta.get("rationale"),
        "overrides": meta.get("overrides"),
        "valid": meta.get("valid", True),
        "assessment_metadata": json.dumps(metadata) if metadata else None,
        "experiment_id": exp_id,
        "trace_timestamp_ms": trace_ms,
    }
    batch.add("assessments", row)


# --- logged models ----------------------------------------------------------------------------


def _extract_logged_model(batch: RowBatch, exp_path: str, exp_id: str, name: str, target_id: int) -> None:
    model_dir = os.path.join(exp_path, "models", name)
    meta = _meta(batch, model_dir, "logged model", "logged_models", LOGGED_MODEL_FIELDS)
    meta_path = os.path.join(model_dir, META)
    model_id = meta["model_id"]
    if model_id != name:
        raise SourceError(meta_path, f"model_id {model_id!r} disagrees with its folder name {name!r}")
    if str(meta["experiment_id"]) != exp_id:
        raise SourceError(meta_path, f"experiment_id {meta['experiment_id']!r} disagrees with the "
                          f"experiment folder {exp_id!r} it sits in")
    status = meta.get("status", 0)
    if isinstance(status, str):
        status = LOGGED_MODEL_STATUS.get(status, status)
    if status not in LOGGED_MODEL_STATUS.values():
        raise SourceError(meta_path, f"unknown logged model status {status!r}")
    experiment = target_id
    batch.add(
        "logged_models",
        (
            model_id,
            experiment,
            meta["name"],
            meta["artifact_location"],
            meta["creation_timestamp"],
            meta["last_updated_timestamp"],
            status,
            _lifecycle(meta, meta_path, "active"),
            meta.get("model_type"),
            meta.get("source_run_id"),
            meta.get("status_message"),
        ),
    )
    params = _key_folder(batch, os.path.join(model_dir, "params"), "logged_model_params")
    batch.extend("logged_model_params", [(model_id, experiment, k, v) for k, v in params.items()])
    tags = _key_folder(batch, os.path.join(model_dir, "tags"), "logged_model_tags")
    batch.extend("logged_model_tags", [(model_id, experiment, k, v) for k, v in tags.items()])
    folder = os.path.join(model_dir, "metrics")
    for key in list_files(folder, batch.census, batch.root):
        path = os.path.join(folder, key)
        batch.read("logged_model_metrics")
        batch.extend("logged_model_metrics", _logged_model_metric_rows(batch, path, model_id, key, experiment))


def _logged_model_metric_rows(batch: RowBatch, path: str, model_id: str, key: str, exp_id: int) -> list[tuple]:
    """Lines ``timestamp value step run_id [dataset_name dataset_digest]``."""
    rows = []
    first: dict[tuple, tuple] = {}  # the target's key (timestamp, step, run) -> its first row
    for number, line in enumerate(read_text(path).splitlines(), 1):
        parts = line.strip().split(" ")
        if len(parts) not in (4, 6):
            raise SourceError(path, f"model metric line has {len(parts)} fields, expected 4 or 6", number)
        try:
            ts, raw, step = int(parts[0]), float(parts[1]), int(parts[2])
        except ValueError:
            raise SourceError(path, f"model metric line is not 'timestamp value step run_id': {line[:80]!r}", number) from None
        # The SQL store sanitizes the value as for run metrics but keeps no NaN flag here.
        value, is_nan = metric_db_value(raw)
        if value != raw:
            kind = "NaN" if is_nan else "+Inf" if raw > 0 else "-Inf"
            batch.lossy[("logged_model_metrics", model_id, key, kind)] += 1
        dataset = (parts[4], parts[5]) if len(parts) == 6 else (None, None)
        row = (model_id, key, ts, step, value, exp_id, parts[3], None) + dataset
        kept = first.setdefault((ts, step, parts[3]), row)
        if kept is not row:
            batch.duplicates[("logged_model_metrics", model_id, key, kept == row)] += 1
        rows.append(row)
    if not rows:
        raise SourceError(path, "metric file holds no data")
    return rows


def _run_metrics(batch: RowBatch, folder: str, run_id: str) -> tuple[list, list]:
    rows: list[tuple] = []
    latest: list[tuple] = []
    errors: list[SourceError] = []
    for key in list_files(folder, batch.census, batch.root):
        path = os.path.join(folder, key)
        batch.read("metrics")
        infinities: Counter = Counter()
        try:
            ts, steps, values, nans = metric_columns(path, infinities)
            if not ts:
                raise SourceError(path, "metric file holds no data")
        except SourceError as e:
            errors.append(e)
            continue
        for kind, n in infinities.items():
            batch.lossy[("metrics", run_id, key, kind)] += n
        # Exact repeats of a point (MLflow logs some twice): the database holds each once. Only a
        # file with a timestamp twice can hold one, and most have none.
        if len(set(ts)) < len(ts):
            repeated = len(ts) - len(set(zip(ts, steps, values, nans)))
            if repeated:
                batch.duplicates[("metrics", run_id, key, True)] += repeated
        rows.extend(zip(repeat(run_id), repeat(key), ts, steps, values, nans))
        # MLflow's SQL store keeps the point that is greatest by (step, timestamp, value), NaN
        # counting as 0, the first one winning ties (the one with the greatest negated index).
        step, t, value, first = max(zip(steps, ts, values, map(neg, range(len(ts)))))
        latest.append((run_id, key, t, step, value, nans[-first]))
    if errors:
        raise SourceErrors(errors)
    return rows, latest


def _extract_registered_model(batch: RowBatch, path: str, target: ModelTarget | None,
                              renumbered: dict[str, str]) -> None:
    meta = _meta(batch, path, "registered model", "registered_models", REGISTERED_MODEL_FIELDS)
    meta_path = os.path.join(path, META)
    name = meta["name"]
    if name != os.path.basename(path):
        raise SourceError(
            meta_path, f"name {name!r} disagrees with its folder name {os.path.basename(path)!r}"
        )
    target = target or ModelTarget(name)
    if not target.joins:
        batch.add(
            "registered_models",
            (
                target.name,
                meta.get("creation_timestamp"),
                meta.get("last_updated_timestamp"),
                meta.get("description"),
            ),
        )
    tags = _key_folder(batch, os.path.join(path, "tags"), "registered_model_tags")
    if LINKED_EXPERIMENTS_TAG in tags:
        tags[LINKED_EXPERIMENTS_TAG] = relinked(tags[LINKED_EXPERIMENTS_TAG], renumbered, target.linked_experiments)
    batch.extend("registered_model_tags", [(target.name, k, v) for k, v in tags.items() if k not in target.skip_tags])

    versions: set[int] = set()
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if is_dir(entry) and entry.name.startswith("version-"):
            versions.add(_extract_model_version(batch, entry.path, name, target))

    aliases_dir = os.path.join(path, "aliases")
    for alias in sorted(list_files(aliases_dir, batch.census, batch.root, keys=False)):
        alias_path = os.path.join(aliases_dir, alias)
        if not ALIAS.fullmatch(alias) or alias.lower() == "latest" or VERSION_ALIAS.fullmatch(alias):
            # mlflow/utils/validation.py: _validate_model_alias_name and its reserved names
            raise SourceError(alias_path, f"{alias!r} is no alias name MLflow takes (letters, digits, "
                              "'_' and '-'; not 'latest' or 'v<number>')")
        text = read_text(alias_path)
        batch.read("registered_model_aliases")
        # As MLflow writes it (str(version)): its reader looks the version up by the text as it
        # is, so ' 1', '1\n' or '01' lead to no version folder, where the database would hold 1.
        if not is_number(text) or text != str(int(text)):
            raise SourceError(alias_path, f"alias must hold a version number as MLflow writes it (digits, no "
                              f"blank, newline or leading zero), found {text!r}")
        if int(text) not in versions:
            raise SourceError(alias_path, f"alias points at version {text}, which does not exist")
        if alias not in target.skip_aliases:
            batch.add("registered_model_aliases", (target.name, alias, int(text) + target.version_offset))


def _extract_model_version(batch: RowBatch, path: str, name: str, target: ModelTarget) -> int:
    """The version's number in its folder; its rows get the target's name and number."""
    meta = _meta(batch, path, "model version", "model_versions", MODEL_VERSION_FIELDS)
    meta_path = os.path.join(path, META)
    raw = meta["version"]
    if isinstance(raw, str) and not is_number(raw):
        raise SourceError(meta_path, f"version {raw!r} is not a number")
    version = int(raw)
    if meta["name"] != name:
        raise SourceError(meta_path, f"name {meta['name']!r} disagrees with its registered model {name!r}")
    if f"version-{version}" != os.path.basename(path):
        raise SourceError(
            meta_path, f"version {version} disagrees with its folder {os.path.basename(path)!r}"
        )
    batch.add(
        "model_versions",
        (
            target.name,
            version + target.version_offset,
            meta.get("creation_timestamp"),
            meta.get("last_updated_timestamp"),
            meta.get("description"),
            meta.get("user_id"),
            meta["current_stage"],
            meta.get("source"),
            meta.get("run_id"),
            meta.get("status", "READY"),
            meta.get("status_message"),
            meta.get("run_link"),
            meta.get("storage_location"),
        ),
    )
    tags = _key_folder(batch, os.path.join(path, "tags"), "model_version_tags")
    number = version + target.version_offset
    batch.extend("model_version_tags", [(target.name, number, k, v) for k, v in tags.items()])
    return version
