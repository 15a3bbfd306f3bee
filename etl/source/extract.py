"""One work unit -> one RowBatch: rows in the column order of ``etl.rows.COLUMNS``.

Runs in producer workers (threads or processes), so it imports nothing heavy: no MLflow, no
SQLAlchemy. A unit never emits part of an entity: if any file of a run (or a registered model)
is bad, the whole entity is left out and a Problem naming the file is reported instead.
"""

from __future__ import annotations

import os

from etl.rows import Problem, RowBatch
from etl.source.layout import (
    META,
    ExperimentUnit,
    RegisteredModelUnit,
    RunsUnit,
    WorkUnit,
)
from etl.source.read import (
    SourceError,
    list_files,
    parse_metric_lines,
    read_key_folder,
    read_text,
    read_yaml,
)

# Protobuf enum numbers MLflow's FileStore writes into run meta.yaml (mlflow/protos/service.proto:
# RunStatus, SourceType). Wire-format numbers never change, so a literal table is safe here and
# keeps MLflow out of the worker processes.
RUN_STATUS = {1: "RUNNING", 2: "SCHEDULED", 3: "FINISHED", 4: "FAILED", 5: "KILLED"}
SOURCE_TYPE = {1: "NOTEBOOK", 2: "JOB", 3: "PROJECT", 4: "LOCAL", 1000: "UNKNOWN"}
LIFECYCLE_STAGES = ("active", "deleted")
RUN_NAME_TAG = "mlflow.runName"


def extract(unit: WorkUnit) -> RowBatch:
    batch = RowBatch()
    if isinstance(unit, RunsUnit):
        for name in unit.run_dirs:
            _guarded(batch, _extract_run, unit.experiment_path, unit.experiment_id, name)
    elif isinstance(unit, ExperimentUnit):
        _guarded(batch, _extract_experiment, unit.path, unit.deleted)
    elif isinstance(unit, RegisteredModelUnit):
        _guarded(batch, _extract_registered_model, unit.path)
    else:  # pragma: no cover - a new unit kind without an extractor is a programming error
        raise TypeError(f"unknown work unit {unit!r}")
    return batch


def _guarded(batch: RowBatch, extractor, *args) -> None:
    """Run one entity's extractor into a private batch; keep its rows only if it all read."""
    own = RowBatch()
    try:
        extractor(own, *args)
    except SourceError as e:
        batch.files += own.files
        batch.problems.append(Problem(e.path, e.reason, e.line))
        return
    batch.files += own.files
    for table, rows in own.rows.items():
        batch.extend(table, rows)


def _meta(batch: RowBatch, folder: str, what: str) -> dict:
    path = os.path.join(folder, META)
    if not os.path.isfile(path):
        raise SourceError(path, f"missing {META} in {what} folder")
    batch.files += 1
    return read_yaml(path)


def _key_folder(batch: RowBatch, folder: str) -> dict[str, str]:
    values = read_key_folder(folder)
    batch.files += len(values)
    return values


def _required(meta: dict, field: str, path: str):
    value = meta.get(field)
    if value is None or value == "":
        raise SourceError(path, f"required field '{field}' is missing")
    return value


def _lifecycle(meta: dict, path: str, default: str) -> str:
    stage = meta.get("lifecycle_stage") or default
    if stage not in LIFECYCLE_STAGES:
        raise SourceError(path, f"unknown lifecycle_stage {stage!r}")
    return stage


def _extract_experiment(batch: RowBatch, path: str, deleted: bool) -> None:
    meta = _meta(batch, path, "experiment")
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
            int(exp_id),
            str(name),
            meta.get("artifact_location"),
            _lifecycle(meta, meta_path, "deleted" if deleted else "active"),
            meta.get("creation_time"),
            meta.get("last_update_time"),
        ),
    )
    # Tags live in tags/ only; a deleted experiment's meta.yaml also carries a stale copy.
    tags = _key_folder(batch, os.path.join(path, "tags"))
    batch.extend("experiment_tags", [(int(exp_id), k, v) for k, v in tags.items()])


def _enum(value, table: dict[int, str], field: str, path: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        if value in table:
            return table[value]
    elif isinstance(value, str) and value in table.values():
        return value
    raise SourceError(path, f"unknown {field} {value!r}")


def _extract_run(batch: RowBatch, exp_path: str, exp_id: str, name: str) -> None:
    run_path = os.path.join(exp_path, name)
    meta = _meta(batch, run_path, "run")
    meta_path = os.path.join(run_path, META)
    run_id = meta.get("run_id") or meta.get("run_uuid")
    if not run_id:
        raise SourceError(meta_path, "required field 'run_id' is missing")
    if run_id != name:
        raise SourceError(meta_path, f"run_id {run_id!r} disagrees with its folder name {name!r}")
    meta_exp = str(meta.get("experiment_id", ""))
    if meta_exp != exp_id:
        raise SourceError(
            meta_path,
            f"run belongs to experiment {meta_exp!r} but sits in experiment folder {exp_id!r}",
        )
    status = _enum(meta.get("status", 1), RUN_STATUS, "status", meta_path)
    source_type = _enum(meta.get("source_type", 4), SOURCE_TYPE, "source_type", meta_path)

    params = _key_folder(batch, os.path.join(run_path, "params"))
    tags = _key_folder(batch, os.path.join(run_path, "tags"))
    metric_rows, latest_rows = _run_metrics(batch, os.path.join(run_path, "metrics"), run_id)

    batch.add(
        "runs",
        (
            run_id,
            # Old trees keep the run name only in the mlflow.runName tag; MLflow's FileStore
            # reader falls back to it the same way.
            meta.get("run_name") or tags.get(RUN_NAME_TAG) or "",
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
            int(exp_id),
        ),
    )
    batch.extend("params", [(run_id, k, v) for k, v in params.items()])
    batch.extend("tags", [(run_id, k, v) for k, v in tags.items()])
    batch.extend("metrics", metric_rows)
    batch.extend("latest_metrics", latest_rows)


def _run_metrics(batch: RowBatch, folder: str, run_id: str) -> tuple[list, list]:
    rows: list[tuple] = []
    latest: list[tuple] = []
    for key in list_files(folder):
        path = os.path.join(folder, key)
        points = parse_metric_lines(path)
        batch.files += 1
        if not points:
            raise SourceError(path, "metric file holds no data")
        head = (run_id, key)
        rows.extend([head + p for p in points])
        # MLflow's SQL store keeps the point that is greatest by (step, timestamp, value), NaN
        # counting as 0, the first one winning ties; max() returns the first maximal item.
        ts, step, value, is_nan = max(points, key=lambda p: (p[1], p[0], p[2]))
        latest.append((run_id, key, ts, step, value, is_nan))
    return rows, latest


def _extract_registered_model(batch: RowBatch, path: str) -> None:
    meta = _meta(batch, path, "registered model")
    meta_path = os.path.join(path, META)
    name = str(_required(meta, "name", meta_path))
    if name != os.path.basename(path):
        raise SourceError(
            meta_path, f"name {name!r} disagrees with its folder name {os.path.basename(path)!r}"
        )
    batch.add(
        "registered_models",
        (
            name,
            meta.get("creation_timestamp"),
            meta.get("last_updated_timestamp"),
            meta.get("description"),
        ),
    )
    tags = _key_folder(batch, os.path.join(path, "tags"))
    batch.extend("registered_model_tags", [(name, k, v) for k, v in tags.items()])

    versions: set[int] = set()
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if entry.is_dir() and entry.name.startswith("version-"):
            versions.add(_extract_model_version(batch, entry.path, name))

    aliases_dir = os.path.join(path, "aliases")
    for alias in sorted(list_files(aliases_dir)):
        alias_path = os.path.join(aliases_dir, alias)
        text = read_text(alias_path).strip()
        batch.files += 1
        if not text.isdigit():
            raise SourceError(alias_path, f"alias must hold a version number, found {text!r}")
        if int(text) not in versions:
            raise SourceError(alias_path, f"alias points at version {text}, which does not exist")
        batch.add("registered_model_aliases", (name, alias, int(text)))


def _extract_model_version(batch: RowBatch, path: str, name: str) -> int:
    meta = _meta(batch, path, "model version")
    meta_path = os.path.join(path, META)
    raw = _required(meta, "version", meta_path)
    try:
        version = int(raw)
    except (TypeError, ValueError):
        raise SourceError(meta_path, f"version {raw!r} is not a number") from None
    if f"version-{version}" != os.path.basename(path):
        raise SourceError(
            meta_path, f"version {version} disagrees with its folder {os.path.basename(path)!r}"
        )
    batch.add(
        "model_versions",
        (
            name,
            version,
            meta.get("creation_timestamp"),
            meta.get("last_updated_timestamp"),
            meta.get("description"),
            meta.get("user_id"),
            meta.get("current_stage", "None"),
            meta.get("source"),
            meta.get("run_id"),
            meta.get("status", "READY"),
            meta.get("status_message"),
            meta.get("run_link"),
            meta.get("storage_location"),
        ),
    )
    tags = _key_folder(batch, os.path.join(path, "tags"))
    batch.extend("model_version_tags", [(name, version, k, v) for k, v in tags.items()])
    return version
