"""Field-by-field comparison of the staged database with the source tree.

Source side: MLflow's own FileStore readers (``etl.verify.oracle``). Target side: the staging
file, read-only, with a few set-oriented SQL queries per chunk of runs. These functions run in
worker processes, one chunk each, and return a VerificationReport that the caller merges.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from functools import cache

from etl.sql_limits import FLOAT_MAX
from etl.verify.claims import foreign, renamed_from
from etl.verify.connect import connect
from etl.verify.oracle import read_logged_model, read_trace, tracking_store
from etl.verify.report import VerificationReport


def _connect(staging: str):
    return connect(staging)


def metric_value_equal(source: float, value: float, is_nan: int) -> bool:
    """NaN == NaN; +-Inf matches the SQL store's +-FLOAT_MAX by sign; else rel_tol 1e-9."""
    if source == value and not is_nan:
        return True
    if math.isnan(source):
        return bool(is_nan)
    if is_nan:
        return False
    if math.isinf(source):
        return value == math.copysign(FLOAT_MAX, source)
    return math.isclose(source, value, rel_tol=1e-9, abs_tol=0.0)


def _sql_value(value: float) -> tuple[float, int]:
    """A source value the way the SQL store would hold it, for ordering and dedup only."""
    if math.isnan(value):
        return 0.0, 1
    if math.isinf(value):
        return math.copysign(FLOAT_MAX, value), 0
    return value, 0


def _compare_fields(report, entity, id_, fields, source, target) -> None:
    for name in fields:
        if source[name] != target[name]:
            report.mismatch(entity, id_, name, source[name], target[name])


def _compare_dict(report, entity, id_, source: dict, target: dict) -> None:
    for key in sorted(source.keys() | target.keys()):
        s, t = source.get(key), target.get(key)
        if s != t:
            report.mismatch(entity, id_, key, s, t)


# --- experiments (and the list of runs each one holds, for the run chunks) ----------------------

EXPERIMENT_FIELDS = ("name", "artifact_location", "lifecycle_stage", "creation_time", "last_update_time")


def listed_stage(stage: str, path: str) -> str:
    """An experiment's lifecycle stage as MLflow's listings show it (search_experiments by view
    type, gc): by its folder. MLflow 1.x and 2.1 deleted an experiment by moving its folder to
    .trash/ and left its meta.yaml saying active, which get_experiment alone still reports: the
    experiment its user deleted stays deleted."""
    return "deleted" if os.path.basename(os.path.dirname(os.path.normpath(path))) == ".trash" else stage


def _read_each(report, entity: str, items, read, skipped: set[str]) -> dict:
    """{id: entity} for (id, path) items read with one of MLflow's readers.

    Items left out as invalid (--skip-invalid) are counted as skipped, not read. A folder MLflow
    itself ignores (MissingConfigException: no meta file) is ignored here too; anything else its
    reader cannot read is a mismatch: the database cannot be proven equal to it.
    """
    out = {}
    for id_, path in items:
        if id_ in skipped:
            report.skip(entity)
            continue
        value = _read_one(report, entity, id_, False, read, path)
        if value is not None:
            out[id_] = value
    return out


def _read_one(report, entity: str, id_: str, in_target: bool, read, *args):
    """One folder through MLflow's reader, with ``_read_each``'s rules: a folder MLflow ignores
    (no meta file) is no entity, so the target must not have it; anything else its reader cannot
    read is a mismatch. None unless read."""
    from mlflow.exceptions import MissingConfigException

    try:
        return read(*args)
    except MissingConfigException:
        if in_target:
            report.checked(entity)
            report.mismatch(entity, id_, "presence", False, True)
    except Exception as e:  # noqa: BLE001 - any reader failure is reported, with its text
        report.checked(entity)
        report.mismatch(entity, id_, "readable by MLflow", str(e)[:200], None)
    return None


def _dirs(folder: str, exclude=()) -> list[tuple[str, str]]:
    if not os.path.isdir(folder):
        return []
    return sorted(
        (name, os.path.join(folder, name))
        for name in os.listdir(folder)
        if name not in exclude and os.path.isdir(os.path.join(folder, name))
    )


def _source_ids(id_map: dict[str, str] | None) -> dict[str, str]:
    """Target experiment id -> source id: ids the target could not hold were renumbered, and
    the comparison goes through the map (old -> new) the migration reported."""
    return {new: old for old, new in (id_map or {}).items()}


def key_values(conn, table: str, owner: str, key: str, value: str, ids: list[str]) -> dict[str, dict]:
    """{owner id: {key: value}} of a key-value table (tags, params, metadata) for these owners."""
    out: dict[str, dict] = defaultdict(dict)
    marks = ",".join("?" * len(ids))
    for id_, k, v in conn.execute(f'SELECT {owner}, "{key}", {value} FROM {table} WHERE {owner} IN ({marks})', ids):
        out[id_][k] = v
    return out


def target_experiments(conn, back: dict[str, str]) -> tuple[dict[str, dict], dict[str, dict[str, str]]]:
    """({folder id: the experiment's row}, {folder id: its tags}) of the target, renumbered
    experiments under the id of their folder (``back``, see _source_ids)."""
    experiments = {
        back.get(str(r[0]), str(r[0])): dict(zip(("experiment_id",) + EXPERIMENT_FIELDS, r))
        for r in conn.execute(
            "SELECT experiment_id, name, artifact_location, lifecycle_stage, creation_time, "
            "last_update_time FROM experiments"
        )
    }
    tags = defaultdict(dict)
    for exp_id, key, value in conn.execute('SELECT experiment_id, "key", value FROM experiment_tags'):
        tags[back.get(str(exp_id), str(exp_id))][key] = value
    return experiments, tags


def verify_experiments(
    mlruns: str, staging: str, skipped: dict[str, set[str]] | None = None,
    id_map: dict[str, str] | None = None, only: set[str] | None = None,
    names: dict[str, str] | None = None, shared: frozenset[str] = frozenset(),
    copies: dict[str, dict] | None = None,
) -> tuple[VerificationReport, dict[str, dict]]:
    """Experiments, their tags and datasets; and, per experiment, the runs, traces and logged
    models MLflow's reader finds, for the chunked checks that follow. ``only``: these experiment
    ids alone (the others were proven by bytes, etl.verify.survey). ``names``, ``shared`` and
    ``copies``: as etl.verify.survey.survey takes them."""
    from mlflow.store.tracking.file_store import FileStore
    from mlflow.utils.validation import _EXPERIMENT_ID_REGEX

    skipped, names, copies = skipped or {}, names or {}, copies or {}
    back = _source_ids(id_map)
    store = tracking_store(mlruns)
    report = VerificationReport()
    # A folder whose name MLflow's id rule refuses ('²') is no experiment its reader can read;
    # its own migration and the load leave it out, and the census names it.
    exp_ids = [
        i for i in store._get_active_experiments() + store._get_deleted_experiments()
        if (only is None or i in only) and _EXPERIMENT_ID_REGEX.match(i)
    ]
    source = _read_each(
        report, "experiments", [(i, i) for i in exp_ids], store._get_experiment,
        skipped.get("experiments", set()),
    )

    conn = _connect(staging)
    try:
        target, target_tags = target_experiments(conn, back)
        target_runs, target_traces, target_models = defaultdict(set), defaultdict(set), defaultdict(set)
        for exp_id, run_id in conn.execute("SELECT experiment_id, run_uuid FROM runs"):
            target_runs[back.get(str(exp_id), str(exp_id))].add(run_id)
        for exp_id, trace_id in conn.execute("SELECT experiment_id, request_id FROM trace_info"):
            target_traces[back.get(str(exp_id), str(exp_id))].add(trace_id)
        for exp_id, model_id in conn.execute("SELECT experiment_id, model_id FROM logged_models"):
            target_models[back.get(str(exp_id), str(exp_id))].add(model_id)
        target_datasets = defaultdict(dict)
        for row in conn.execute(
            "SELECT experiment_id, name, digest, dataset_source_type, dataset_source, "
            "dataset_schema, dataset_profile FROM datasets"
        ):
            target_datasets[back.get(str(row[0]), str(row[0]))][(row[1], row[2])] = row[3:]
    finally:
        conn.close()

    plan: dict[str, dict] = {}
    skipped_experiments = skipped.get("experiments", set())
    target = {k: v for k, v in target.items() if not foreign(k) and (only is None or k in only)}
    for exp_id in sorted(source.keys() | (target.keys() - skipped_experiments)):
        exp = source.get(exp_id)
        row = target.get(exp_id)
        if exp_id not in shared:  # merged: etl.verify.merged compares the experiment
            report.checked("experiments")
            if exp is None or row is None:
                report.mismatch("experiments", exp_id, "presence", exp is not None, row is not None)
                continue
            src = {f: getattr(exp, f) for f in EXPERIMENT_FIELDS}
            src["lifecycle_stage"] = listed_stage(exp.lifecycle_stage, store._get_experiment_path(exp_id))
            if exp_id in names:
                if not renamed_from(exp.name, names[exp_id]):
                    report.mismatch("experiments", exp_id, "name (renamed)", exp.name, names[exp_id])
                src["name"] = names[exp_id]
            _compare_fields(report, "experiments", exp_id, EXPERIMENT_FIELDS, src, row)
            _compare_dict(report, "experiments", exp_id, dict(exp.tags), target_tags.get(exp_id, {}))
        elif exp is None:
            continue

        exp_dir = store._get_experiment_path(exp_id, assert_exists=True)
        # Run folders are read by the run checks (etl.verify.runs), which also decide which of
        # them MLflow counts as runs of this experiment.
        run_ids = [name for name, _ in _dirs(exp_dir, FileStore.RESERVED_EXPERIMENT_FOLDERS)
                   if name not in copies.get("runs", ())]
        traces = _read_each(
            report, "traces", [d for d in _dirs(os.path.join(exp_dir, "traces")) if d[0] not in copies.get("traces", ())],
            store._get_trace_info_from_dir, skipped.get("traces", set()),
        )
        models = _read_each(
            report, "logged_models",
            [d for d in _dirs(os.path.join(exp_dir, "models")) if d[0] not in copies.get("logged_models", ())],
            store._get_model_from_dir, skipped.get("logged_models", set()),
        )
        plan[exp_id] = {"path": exp_dir, "runs": run_ids, "traces": sorted(traces), "models": sorted(models)}
        if exp_id in shared:
            continue
        for entity, source_ids, target_ids in (
            ("runs", run_ids, target_runs), ("traces", traces, target_traces),
            ("logged_models", models, target_models),
        ):
            expected_absent = skipped.get(entity, set())
            for extra in sorted(target_ids.get(exp_id, set()) - set(source_ids) - expected_absent):
                report.checked(entity)
                report.mismatch(entity, extra, "presence", False, True)
        _verify_datasets(report, store, exp_id, exp_dir, target_datasets.get(exp_id, {}),
                         skipped.get("datasets", set()))
    return report, plan


DATASET_FIELDS = ("source_type", "source", "schema", "profile")


def _verify_datasets(report, store, exp_id: str, exp_dir: str, target: dict, skipped: set[str]) -> None:
    folder = os.path.join(exp_dir, "datasets")
    datasets = _read_each(
        report, "datasets", [(f"{exp_id}/{name}", name) for name, _ in _dirs(folder)],
        lambda name: store._get_dataset_from_dir(folder, name), skipped,
    )
    seen = set()
    for dataset in datasets.values():
        key = (dataset.name, dataset.digest)
        seen.add(key)
        id_ = f"{exp_id}/{dataset.name}@{dataset.digest}"
        report.checked("datasets")
        row = target.get(key)
        if row is None:
            report.mismatch("datasets", id_, "presence", True, False)
            continue
        _compare_fields(report, "datasets", id_, DATASET_FIELDS,
                        {f: getattr(dataset, f) for f in DATASET_FIELDS}, dict(zip(DATASET_FIELDS, row)))
    for name, digest in sorted(target.keys() - seen):
        report.checked("datasets")
        report.mismatch("datasets", f"{exp_id}/{name}@{digest}", "presence", False, True)


# --- traces and assessments -------------------------------------------------------------------
# The target side is read with plain SQL, as MLflow's SQL store's entities show it
# (SqlTraceInfo.to_mlflow_entity, SqlLoggedModel.to_mlflow_entity): importing that store costs
# every process seconds of CPU, and it is not needed to read a handful of tables.

TRACE_FIELDS = (
    "request_time", "execution_duration", "state", "client_request_id", "request_preview",
    "response_preview",
)
TRACE_COLUMNS = ("timestamp_ms", "execution_time_ms", "status", "client_request_id", "request_preview",
                 "response_preview")
ASSESSMENT_COLUMNS = (
    "assessment_id", "trace_id", "name", "assessment_type", "value", "error", "created_timestamp",
    "last_updated_timestamp", "source_type", "source_id", "run_id", "span_id", "rationale",
    "overrides", "valid", "assessment_metadata",
)
TRACE_NAME_TAG = "mlflow.traceName"


@cache
def _trace_analytics():
    """MLflow's derivation of trace_info columns from trace metadata, in releases that have it."""
    try:
        from mlflow.store.tracking.utils import trace_analytics
    except ImportError:
        return None
    return trace_analytics


def _target_analytics(conn, trace_ids: list[str]) -> tuple[tuple[str, ...], dict[str, dict]]:
    """The trace_info columns MLflow fills from promoted metadata, and their values per trace."""
    analytics = _trace_analytics()
    if analytics is None:
        return (), {}
    # The cursor's description names the columns on SQLite and PostgreSQL alike.
    present = {d[0] for d in conn.execute("SELECT * FROM trace_info LIMIT 0").description}
    wanted = ("session_id", *analytics.TOKEN_COLUMN_BY_KEY.values(), *analytics.COST_COLUMN_BY_KEY.values())
    columns = tuple(c for c in wanted if c in present)
    if not columns:
        return (), {}
    marks = ",".join("?" * len(trace_ids))
    rows = {
        r[0]: dict(zip(columns, r[1:]))
        for r in conn.execute(
            f"SELECT request_id, {', '.join(columns)} FROM trace_info WHERE request_id IN ({marks})", trace_ids
        )
    }
    return columns, rows


def _verify_trace_metadata(report, trace_id: str, source: dict, shown: dict, columns, row: dict) -> None:
    """Session, token usage and cost metadata live in trace_info columns: those are compared as
    the columns MLflow derives from the file's text (so JSON spacing or key order cannot refuse a
    correct migration), the rest as text."""
    source, shown = dict(source), dict(shown)
    analytics = _trace_analytics()
    if columns:
        try:
            expected = analytics.analytics_columns_from_metadata(source)
        except Exception as e:  # noqa: BLE001 - MLflow's own validation refused the value
            report.mismatch("traces", trace_id, "metadata readable by MLflow", str(e)[:200], None)
            return
        for key in analytics.PROMOTED_TRACE_METADATA_KEYS:
            source.pop(key, None)
            shown.pop(key, None)
        for column in columns:
            if expected.get(column) != row.get(column):
                report.mismatch("traces", trace_id, column, expected.get(column), row.get(column))
    _compare_dict(report, "traces", trace_id, source, shown)


def _target_trace_infos(conn, trace_ids: list[str]) -> tuple[dict, dict, dict]:
    """{trace id: fields as TraceInfo names them}, {trace id: tags}, {trace id: metadata rows}."""
    marks = ",".join("?" * len(trace_ids))
    present = {d[0] for d in conn.execute("SELECT * FROM trace_info LIMIT 0").description}
    name_column = "trace_name" if "trace_name" in present else "NULL"
    infos, names = {}, {}
    for trace_id, name, *values in conn.execute(
        f"SELECT request_id, {name_column}, {', '.join(TRACE_COLUMNS)} FROM trace_info "
        f"WHERE request_id IN ({marks})", trace_ids
    ):
        infos[trace_id] = dict(zip(TRACE_FIELDS, values))
        names[trace_id] = name
    tags = key_values(conn, "trace_tags", "request_id", "key", "value", trace_ids)
    for trace_id, name in names.items():
        if name_column != "NULL":  # the column wins, as in MLflow's SQL entity
            tags[trace_id].pop(TRACE_NAME_TAG, None)
        if name is not None:
            tags[trace_id][TRACE_NAME_TAG] = name
    return infos, tags, key_values(conn, "trace_request_metadata", "request_id", "key", "value", trace_ids)


def verify_traces(mlruns: str, staging: str, experiment_id: str, trace_ids: list[str]) -> VerificationReport:
    store = tracking_store(mlruns)
    report = VerificationReport()
    conn = _connect(staging)
    try:
        infos, tags, metadata = _target_trace_infos(conn, trace_ids)
        assessments = _target_assessments(conn, trace_ids)
        columns, analytics = _target_analytics(conn, trace_ids)
    finally:
        conn.close()
    for trace_id in trace_ids:
        trace_dir = store._find_trace_dir(trace_id, assert_exists=True)
        read = _read_one(report, "traces", trace_id, trace_id in infos, read_trace, store, trace_dir)
        if read is None:
            continue
        source, source_assessments = read
        report.checked("traces")
        dst = infos.get(trace_id)
        if dst is None:
            report.mismatch("traces", trace_id, "presence", True, False)
            continue
        src = {f: getattr(source, f) for f in TRACE_FIELDS}
        src["state"] = source.state.value
        _compare_fields(report, "traces", trace_id, TRACE_FIELDS, src, dst)
        _compare_dict(report, "traces", trace_id, dict(source.tags), tags.get(trace_id, {}))
        _verify_trace_metadata(report, trace_id, source.trace_metadata, metadata.get(trace_id, {}), columns,
                               analytics.get(trace_id, {}))
        _verify_assessments(report, source_assessments, assessments.get(trace_id, {}))
    return report


def _target_assessments(conn, trace_ids: list[str]) -> dict[str, dict[str, dict]]:
    """{trace id: {assessment id: the row's columns}}: the rows as stored, since MLflow's SQL
    entity for an expectation leaves out its rationale, as its file reader does."""
    marks = ",".join("?" * len(trace_ids))
    out: dict[str, dict[str, dict]] = defaultdict(dict)
    for row in conn.execute(
        f"SELECT {', '.join(ASSESSMENT_COLUMNS)} FROM assessments WHERE trace_id IN ({marks})", trace_ids
    ):
        record = dict(zip(ASSESSMENT_COLUMNS, row))
        out[record["trace_id"]][record["assessment_id"]] = record
    return out


def _assessment_kind(a) -> tuple[str, object]:
    if a.feedback is not None:
        return "feedback", a.feedback.value
    if a.expectation is not None:
        return "expectation", a.expectation.value
    return "issue", {"issue_name": a.issue.issue_name}


def _source_assessment(a, raw: dict) -> dict:
    """What the database must hold for one assessment file."""
    kind, value = _assessment_kind(a)
    error = a.feedback.error if a.feedback is not None else None
    return {
        "name": a.name, "trace_id": a.trace_id, "type": kind, "value": value,
        "error": error.to_dictionary() if error else None,
        "create_time_ms": a.create_time_ms, "last_update_time_ms": a.last_update_time_ms,
        "source": (a.source.source_type, a.source.source_id), "span_id": a.span_id,
        "metadata": a.metadata or None,
        # From the file, where MLflow's entity drops them: run_id as a key of its own, or else
        # the sourceRunId metadata MLflow's entity derives it from.
        "run_id": raw.get("run_id") or a.run_id,
        "rationale": raw.get("rationale"), "overrides": raw.get("overrides"),
        "valid": bool(raw.get("valid", True)),
    }


def _target_assessment(row: dict) -> dict:
    import json

    from mlflow.entities.assessment_error import AssessmentError

    error = json.loads(row["error"]) if row["error"] is not None else None
    return {
        "name": row["name"], "trace_id": row["trace_id"], "type": row["assessment_type"],
        "value": json.loads(row["value"]) if row["value"] is not None else None,
        "error": AssessmentError.from_dictionary(error).to_dictionary() if error else None,
        "create_time_ms": row["created_timestamp"], "last_update_time_ms": row["last_updated_timestamp"],
        "source": (row["source_type"], row["source_id"]), "span_id": row["span_id"],
        "metadata": json.loads(row["assessment_metadata"]) if row["assessment_metadata"] else None,
        "run_id": row["run_id"], "rationale": row["rationale"], "overrides": row["overrides"],
        "valid": None if row["valid"] is None else bool(row["valid"]),
    }


def _verify_assessments(report, source: list, target: dict[str, dict]) -> None:
    import json

    remaining = dict(target)
    for a, raw in source:
        report.checked("assessments")
        row = remaining.pop(a.assessment_id, None)
        if row is None:
            report.mismatch("assessments", a.assessment_id, "presence", True, False)
            continue
        src, dst = _source_assessment(a, raw), _target_assessment(row)
        for field in sorted(src):
            s_val, t_val = src[field], dst[field]
            # JSON documents (values, errors, metadata) also match as text: NaN equals NaN there.
            same = s_val == t_val or (
                field in ("value", "error", "metadata")
                and json.dumps(s_val, sort_keys=True) == json.dumps(t_val, sort_keys=True)
            )
            if not same:
                report.mismatch("assessments", a.assessment_id, field, s_val, t_val)
    for extra in sorted(remaining):
        report.checked("assessments")
        report.mismatch("assessments", extra, "presence", False, True)


# --- logged models ----------------------------------------------------------------------------

LOGGED_MODEL_FIELDS = (
    "name", "experiment_id", "artifact_location", "creation_timestamp", "last_updated_timestamp",
    "status", "status_message", "model_type", "source_run_id",
)


def _model_metric_points(report, model_id: str, points) -> dict:
    """{(key, timestamp, step, run_id): (dataset_name, dataset_digest, value as SQL holds it)}.

    The SQL store's key for a logged-model metric row is (model, key, timestamp, step, run_id),
    and it keeps the first point logged under a key: so, in file order, does this; each later
    one is counted in the report, as the same point again or as another one at that key."""
    out = {}
    for m in points:
        point = (m.dataset_name, m.dataset_digest, _sql_value(m.value)[0])
        first = out.setdefault((m.key, m.timestamp, m.step, m.run_id), point)
        if first is not point:
            report.count_duplicates("logged_model_metrics", model_id, m.key, 1, exact=first == point)
    return out


def _target_logged_models(conn, model_ids: list[str]) -> tuple[dict, dict, dict, dict]:
    """{model id: row}, {model id: tags}, {model id: params}, {model id: metric points}."""
    marks = ",".join("?" * len(model_ids))
    rows = {
        r[0]: dict(zip(LOGGED_MODEL_FIELDS + ("lifecycle_stage",), r[1:]))
        for r in conn.execute(
            f"SELECT model_id, name, experiment_id, artifact_location, creation_timestamp_ms, "
            f"last_updated_timestamp_ms, status, status_message, model_type, source_run_id, lifecycle_stage "
            f"FROM logged_models WHERE model_id IN ({marks})", model_ids
        )
    }
    tags = key_values(conn, "logged_model_tags", "model_id", "tag_key", "tag_value", model_ids)
    params = key_values(conn, "logged_model_params", "model_id", "param_key", "param_value", model_ids)
    metrics = defaultdict(dict)
    for model_id, key, ts, step, run_id, name, digest, value in conn.execute(
        f"SELECT model_id, metric_name, metric_timestamp_ms, metric_step, run_id, dataset_name, "
        f"dataset_digest, metric_value FROM logged_model_metrics WHERE model_id IN ({marks})",
        model_ids,
    ):
        metrics[model_id][(key, ts, step, run_id)] = (name, digest, value)
    return rows, tags, params, metrics


def _verify_model_metrics(report, model_id: str, source: dict, target: dict) -> None:
    """Every point the files hold, against every row: the first difference is named."""
    for point in sorted(source.keys() | target.keys(), key=lambda k: (k[0], k[2], k[1], k[3])):
        s, t = source.get(point), target.get(point)
        if s != t:
            key, ts, step, run_id = point
            report.mismatch("logged_models", model_id, "metrics",
                            None if s is None else (key, ts, step, run_id) + s,
                            None if t is None else (key, ts, step, run_id) + t)
            return


def verify_logged_models(mlruns: str, staging: str, experiment_id: str, model_ids: list[str],
                         id_map: dict[str, str] | None = None) -> VerificationReport:
    from mlflow.entities import LoggedModelStatus

    store = tracking_store(mlruns)
    report = VerificationReport()
    back = _source_ids(id_map)
    folder = os.path.join(store._get_experiment_path(experiment_id, assert_exists=True), "models")
    conn = _connect(staging)
    try:
        rows, tags, params, metrics = _target_logged_models(conn, model_ids)
    finally:
        conn.close()
    for model_id in model_ids:
        read = _read_one(report, "logged_models", model_id, model_id in rows, read_logged_model, store,
                         os.path.join(folder, model_id))
        if read is None:
            continue
        meta, source, points = read
        report.checked("logged_models")
        for point in points:
            report.count_unrepresentable("logged_model_metrics", model_id, point.key, (point.value,))
        row = rows.get(model_id)
        if row is None:
            report.mismatch("logged_models", model_id, "presence", True, False)
            continue
        dst = dict(row)
        dst["experiment_id"] = back.get(str(row["experiment_id"]), str(row["experiment_id"]))
        try:
            dst["status"] = LoggedModelStatus.from_int(row["status"])
        except Exception:  # noqa: BLE001 - a number MLflow's SQL store could not read back
            report.mismatch("logged_models", model_id, "status", source.status, row["status"])
            dst["status"] = source.status
        _compare_fields(
            report, "logged_models", model_id, LOGGED_MODEL_FIELDS,
            {f: getattr(source, f) for f in LOGGED_MODEL_FIELDS}, dst,
        )
        # A deleted model keeps its folder; only the meta's lifecycle_stage says it is deleted.
        stage = meta.get("lifecycle_stage") or "active"
        if stage != row["lifecycle_stage"]:
            report.mismatch("logged_models", model_id, "lifecycle_stage", stage, row["lifecycle_stage"])
        _compare_dict(report, "logged_models", model_id, dict(source.tags), tags.get(model_id, {}))
        _compare_dict(report, "logged_models", model_id, dict(source.params), params.get(model_id, {}))
        _verify_model_metrics(report, model_id, _model_metric_points(report, model_id, points),
                              metrics.get(model_id, {}))
    return report
