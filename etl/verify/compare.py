"""Field-by-field comparison of the staged database with the source tree.

Source side: MLflow's own FileStore readers (``etl.verify.oracle``). Target side: the staging
file, read-only, with a few set-oriented SQL queries per chunk of runs. These functions run in
worker processes, one chunk each, and return a VerificationReport that the caller merges.
"""

from __future__ import annotations

import math
import sqlite3
from collections import defaultdict

from etl.source.read import FLOAT_MAX
from etl.verify.oracle import registry_store, tracking_store, true_steps
from etl.verify.report import VerificationReport

PAGE = 1000


def _connect(staging: str) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{staging}?mode=ro", uri=True)


def metric_value_equal(source: float, value: float, is_nan: int) -> bool:
    """NaN == NaN; +-Inf matches the SQL store's +-FLOAT_MAX by sign; else rel_tol 1e-9."""
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


def verify_experiments(mlruns: str, staging: str) -> tuple[VerificationReport, dict[str, list[str]]]:
    from mlflow.entities import ViewType

    store = tracking_store(mlruns)
    report = VerificationReport()
    source = {}
    token = None
    while True:
        page = store.search_experiments(view_type=ViewType.ALL, max_results=PAGE, page_token=token)
        for exp in page:
            source[exp.experiment_id] = exp
        token = page.token
        if not token:
            break

    conn = _connect(staging)
    try:
        target = {
            str(r[0]): dict(zip(("experiment_id",) + EXPERIMENT_FIELDS, r))
            for r in conn.execute(
                "SELECT experiment_id, name, artifact_location, lifecycle_stage, creation_time, "
                "last_update_time FROM experiments"
            )
        }
        target_tags = defaultdict(dict)
        for exp_id, key, value in conn.execute("SELECT experiment_id, key, value FROM experiment_tags"):
            target_tags[str(exp_id)][key] = value
        target_runs = defaultdict(set)
        for exp_id, run_id in conn.execute("SELECT experiment_id, run_uuid FROM runs"):
            target_runs[str(exp_id)].add(run_id)
    finally:
        conn.close()

    runs_by_experiment: dict[str, list[str]] = {}
    for exp_id in sorted(source.keys() | target.keys()):
        report.checked("experiments")
        exp = source.get(exp_id)
        row = target.get(exp_id)
        if exp is None or row is None:
            report.mismatch("experiments", exp_id, "presence", exp is not None, row is not None)
            continue
        src = {f: getattr(exp, f) for f in EXPERIMENT_FIELDS}
        _compare_fields(report, "experiments", exp_id, EXPERIMENT_FIELDS, src, row)
        _compare_dict(report, "experiments", exp_id, dict(exp.tags), target_tags.get(exp_id, {}))

        run_ids = sorted(info.run_id for info in store._list_run_infos(exp_id, ViewType.ALL))
        runs_by_experiment[exp_id] = run_ids
        for run_id in sorted(target_runs.get(exp_id, set()) - set(run_ids)):
            report.checked("runs")
            report.mismatch("runs", run_id, "presence", False, True)
    return report, runs_by_experiment


# --- runs: info, params, tags, metric history, latest metrics ------------------------------------

RUN_FIELDS = (
    "name", "experiment_id", "user_id", "status", "start_time", "end_time", "artifact_uri",
    "lifecycle_stage",
)


def verify_runs(mlruns: str, staging: str, experiment_id: str, run_ids: list[str]) -> VerificationReport:
    store = tracking_store(mlruns)
    report = VerificationReport()
    conn = _connect(staging)
    try:
        target = _target_runs(conn, run_ids)
    finally:
        conn.close()
    for run_id in run_ids:
        _verify_run(report, store, mlruns, experiment_id, run_id, target)
    return report


def _target_runs(conn: sqlite3.Connection, run_ids: list[str]) -> dict:
    marks = ",".join("?" * len(run_ids))
    runs = {}
    for row in conn.execute(
        f"SELECT run_uuid, name, experiment_id, user_id, status, start_time, end_time, "
        f"artifact_uri, lifecycle_stage FROM runs WHERE run_uuid IN ({marks})",
        run_ids,
    ):
        runs[row[0]] = dict(zip(RUN_FIELDS, row[1:]))
        runs[row[0]]["experiment_id"] = str(row[2])
    params, tags = defaultdict(dict), defaultdict(dict)
    for run_id, key, value in conn.execute(
        f"SELECT run_uuid, key, value FROM params WHERE run_uuid IN ({marks})", run_ids
    ):
        params[run_id][key] = value
    for run_id, key, value in conn.execute(
        f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN ({marks})", run_ids
    ):
        tags[run_id][key] = value
    history = defaultdict(list)
    for run_id, key, ts, step, value, is_nan in conn.execute(
        f"SELECT run_uuid, key, timestamp, step, value, is_nan FROM metrics "
        f"WHERE run_uuid IN ({marks}) ORDER BY run_uuid, key, step, timestamp, value",
        run_ids,
    ):
        history[(run_id, key)].append((ts, step, value, is_nan))
    latest = defaultdict(dict)
    for run_id, key, ts, step, value, is_nan in conn.execute(
        f"SELECT run_uuid, key, timestamp, step, value, is_nan FROM latest_metrics "
        f"WHERE run_uuid IN ({marks})",
        run_ids,
    ):
        latest[run_id][key] = (ts, step, value, is_nan)
    return {"runs": runs, "params": params, "tags": tags, "history": history, "latest": latest}


def _verify_run(report, store, mlruns, experiment_id, run_id, target) -> None:
    report.checked("runs")
    row = target["runs"].get(run_id)
    if row is None:
        report.mismatch("runs", run_id, "presence", True, False)
        return
    run = store.get_run(run_id)
    info = run.info
    src = {
        "name": info.run_name, "experiment_id": info.experiment_id, "user_id": info.user_id,
        "status": info.status, "start_time": info.start_time, "end_time": info.end_time,
        "artifact_uri": info.artifact_uri, "lifecycle_stage": info.lifecycle_stage,
    }
    _compare_fields(report, "runs", run_id, RUN_FIELDS, src, row)

    report.checked("params")
    _compare_dict(report, "params", run_id, dict(run.data.params), target["params"].get(run_id, {}))
    report.checked("tags")
    _compare_dict(report, "tags", run_id, dict(run.data.tags), target["tags"].get(run_id, {}))

    report.checked("latest_metrics")
    target_latest = target["latest"].get(run_id, {})
    keys = set(run.data.metrics)
    for key in sorted(target_latest.keys() - keys):
        report.mismatch("latest_metrics", run_id, key, None, target_latest[key])
    for key in sorted(keys):
        history = store.get_metric_history(run_id, key)
        steps = true_steps(mlruns, experiment_id, run_id, key, history)
        points = [(m.timestamp, step, m.value) for m, step in zip(history, steps)]
        _verify_history(report, f"{run_id}/{key}", points, target["history"].get((run_id, key), []))
        _verify_latest(report, run_id, key, points, target_latest.get(key))


def _verify_history(report, id_, points, target) -> None:
    """The full history as a set: the FileStore may repeat an identical point, SQL cannot."""
    report.checked("metrics")
    unique = {}
    for ts, step, value in points:
        unique.setdefault((ts, step) + _sql_value(value), (ts, step, value))
    source = sorted(unique.values(), key=lambda p: (p[1], p[0]) + _sql_value(p[2]))
    if len(source) != len(target):
        report.mismatch("metrics", id_, "points", len(source), len(target))
        return
    for (ts, step, value), (t_ts, t_step, t_value, t_nan) in zip(source, target):
        if (ts, step) != (t_ts, t_step) or not metric_value_equal(value, t_value, t_nan):
            report.mismatch(
                "metrics", id_, f"step {step} @ {ts}", (ts, step, value), (t_ts, t_step, t_value, t_nan)
            )
            return


def _verify_latest(report, run_id, key, points, target) -> None:
    # MLflow's SQL store's rule: greatest (step, timestamp, value), NaN counting as 0, first wins.
    ts, step, value = max(points, key=lambda p: (p[1], p[0], _sql_value(p[2])[0]))
    if target is None:
        report.mismatch("latest_metrics", run_id, key, (ts, step, value), None)
        return
    t_ts, t_step, t_value, t_nan = target
    if (ts, step) != (t_ts, t_step) or not metric_value_equal(value, t_value, t_nan):
        report.mismatch("latest_metrics", run_id, key, (ts, step, value), (t_ts, t_step, t_value, t_nan))


# --- model registry -------------------------------------------------------------------------------

MODEL_FIELDS = ("creation_timestamp", "last_updated_timestamp", "description")
VERSION_FIELDS = (
    "creation_timestamp", "last_updated_timestamp", "description", "user_id", "current_stage",
    "source", "run_id", "status", "status_message", "run_link",
)


def verify_registry(mlruns: str, staging: str) -> VerificationReport:
    store = registry_store(mlruns)
    report = VerificationReport()
    conn = _connect(staging)
    try:
        t_models = {
            r[0]: dict(zip(MODEL_FIELDS, r[1:]))
            for r in conn.execute(
                "SELECT name, creation_time, last_updated_time, description FROM registered_models"
            )
        }
        t_tags, t_aliases, t_version_tags = defaultdict(dict), defaultdict(dict), defaultdict(dict)
        for name, key, value in conn.execute("SELECT name, key, value FROM registered_model_tags"):
            t_tags[name][key] = value
        for name, alias, version in conn.execute(
            "SELECT name, alias, version FROM registered_model_aliases"
        ):
            t_aliases[name][alias] = str(version)
        t_versions = {
            (r[0], str(r[1])): dict(zip(VERSION_FIELDS, r[2:]))
            for r in conn.execute(
                "SELECT name, version, creation_time, last_updated_time, description, user_id, "
                "current_stage, source, run_id, status, status_message, run_link FROM model_versions"
            )
        }
        for name, version, key, value in conn.execute(
            "SELECT name, version, key, value FROM model_version_tags"
        ):
            t_version_tags[(name, str(version))][key] = value
    finally:
        conn.close()

    seen_versions = set()
    paths = store._get_all_registered_model_paths()
    source_names = set()
    for path in paths:
        model = store._get_registered_model_from_path(path)
        source_names.add(model.name)
        report.checked("registered_models")
        row = t_models.get(model.name)
        if row is None:
            report.mismatch("registered_models", model.name, "presence", True, False)
            continue
        src = {f: getattr(model, f) for f in MODEL_FIELDS}
        _compare_fields(report, "registered_models", model.name, MODEL_FIELDS, src, row)
        # RegisteredModel.tags hides mlflow.prompt.is_prompt from users; the store keeps it, and
        # so must the database (it is what makes a registered model a prompt).
        _compare_dict(report, "registered_models", model.name, dict(model._tags), t_tags.get(model.name, {}))
        aliases = {a.alias: str(a.version) for a in model.aliases} if isinstance(model.aliases, list) else dict(model.aliases)
        _compare_dict(report, "registered_models", model.name, aliases, t_aliases.get(model.name, {}))
        for mv in store._list_file_model_versions_under_path(path):
            key = (mv.name, str(mv.version))
            seen_versions.add(key)
            id_ = f"{mv.name}/{mv.version}"
            report.checked("model_versions")
            t_row = t_versions.get(key)
            if t_row is None:
                report.mismatch("model_versions", id_, "presence", True, False)
                continue
            src = {f: getattr(mv, f) for f in VERSION_FIELDS}
            _compare_fields(report, "model_versions", id_, VERSION_FIELDS, src, t_row)
            _compare_dict(report, "model_versions", id_, dict(mv.tags), t_version_tags.get(key, {}))
    for name in sorted(t_models.keys() - source_names):
        report.checked("registered_models")
        report.mismatch("registered_models", name, "presence", False, True)
    for name, version in sorted(t_versions.keys() - seen_versions):
        report.checked("model_versions")
        report.mismatch("model_versions", f"{name}/{version}", "presence", False, True)
    return report
