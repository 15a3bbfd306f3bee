"""Logged models proven by bytes without MLflow: meta.yaml, tags, params and every metric point.

As for runs (etl/verify/runs.py): a tag or param file holds its value's UTF-8 bytes; meta.yaml
is parsed with the loader MLflow's ``read_yaml`` uses and compared, mapping against mapping, with
the target's row in the file's shape (``FileStore._make_persisted_model_dict``); a metric file
holds one line ``f"{timestamp} {value} {step} {run_id}[ {dataset_name} {dataset_digest}]"`` per
point (``FileStore._log_model_metric``), and the target's rows rendered so must be those lines.

Only "equal" or "not sure": a model it is not sure of (a point logged twice, NaN or +-Inf, a value
written as an int, a key it does not render) goes whole to MLflow's reader
(``etl.verify.compare.verify_logged_models``), which reports what differs.
"""

from __future__ import annotations

import os
from collections import defaultdict

from etl.verify.compare import key_values
from etl.verify.files import file_lines, key_files, parse_meta, read_bytes, same, same_folders
from etl.verify.proof import prove_each, unreadable
from etl.verify.report import VerificationReport

# LoggedModelStatus numbers as FileStore writes them (the test suite checks them against the
# installed MLflow's LoggedModelStatus.from_int).
MODEL_STATUSES = frozenset({0, 1, 2, 3})
META_FIELDS = (
    "artifact_location", "creation_timestamp", "last_updated_timestamp", "model_type", "name",
    "source_run_id", "status", "status_message",
)
_COLUMNS = {"creation_timestamp": "creation_timestamp_ms", "last_updated_timestamp": "last_updated_timestamp_ms"}


def prove_logged_models(
    staging: str, experiment_id: str, exp_dir: str, names: list[str], id_map: dict[str, str] | None = None,
) -> tuple[VerificationReport, list[str]]:
    """(what was proven, the models it could not prove) for the model folders ``names`` of one
    experiment folder."""
    def matches(report, name, target):
        return _model_matches(report, exp_dir, experiment_id, name, target)

    return prove_each(staging, names, _target_models, "models", matches, id_map)


def _target_models(conn, model_ids: list[str]) -> dict:
    marks = ",".join("?" * len(model_ids))
    columns = ("experiment_id", "lifecycle_stage") + tuple(_COLUMNS.get(f, f) for f in META_FIELDS)
    models = {
        r[0]: dict(zip(("experiment_id", "lifecycle_stage") + META_FIELDS, r[1:]))
        for r in conn.execute(
            f"SELECT model_id, {', '.join(columns)} FROM logged_models WHERE model_id IN ({marks})", model_ids
        )
    }
    metrics = defaultdict(lambda: defaultdict(list))
    for model_id, key, *point in conn.execute(
        f"SELECT model_id, metric_name, metric_timestamp_ms, metric_value, metric_step, run_id, dataset_name, "
        f"dataset_digest FROM logged_model_metrics WHERE model_id IN ({marks})",
        model_ids,
    ):
        metrics[model_id][key].append(point)
    return {
        "models": models, "metrics": metrics,
        "tags": key_values(conn, "logged_model_tags", "model_id", "tag_key", "tag_value", model_ids),
        "params": key_values(conn, "logged_model_params", "model_id", "param_key", "param_value", model_ids),
    }


def _model_matches(report, exp_dir: str, experiment_id: str, model_id: str, target: dict) -> bool:
    """True when the target provably holds exactly what the model folder holds (counted in the
    report); False when unsure (nothing counted)."""
    model_dir = os.path.join(exp_dir, "models", model_id)
    row = target["models"].get(model_id)
    path = os.path.join(model_dir, "meta.yaml")
    data = read_bytes(path)
    if data is None:
        return unreadable(report, "logged_models", model_id, path, row, experiment_id)
    if row is None or row["experiment_id"] != experiment_id or row["status"] not in MODEL_STATUSES:
        return False
    meta = parse_meta(data)
    if meta is None:
        return False
    view = dict(meta)
    # Only a deleted model's file says its stage; MLflow's reader takes the rest as active.
    if (view.pop("lifecycle_stage", None) or "active") != row["lifecycle_stage"]:
        return False
    expected = {f: row[f] for f in META_FIELDS}
    expected.update(model_id=model_id, experiment_id=experiment_id)
    if not same(view, expected):
        return False
    values = {"tags": target["tags"].get(model_id, {}), "params": target["params"].get(model_id, {})}
    metrics = key_files(os.path.join(model_dir, "metrics"))
    if metrics is None or not same_folders(model_dir, values):
        return False
    rows = target["metrics"].get(model_id, {})
    if metrics.keys() != rows.keys() or not all(_lines_match(metrics[k], rows[k]) for k in metrics):
        return False
    report.checked("logged_models")
    return True


def _lines_match(data: bytes, rows: list) -> bool:
    """The file's lines are the rows rendered, one each. A repeated (timestamp, step, run) or a
    value the SQL store changes (NaN, +-Inf) makes lines and rows differ: MLflow's reader then
    applies the SQL store's rules."""
    lines = file_lines(data)
    if lines is None:
        return False
    rendered = set()
    for ts, value, step, run_id, name, digest in rows:
        if run_id is None or (name is None) != (digest is None):
            return False
        dataset = "" if name is None else f" {name} {digest}"
        rendered.add(f"{ts} {value!r} {step} {run_id}{dataset}")
    return len(rendered) == len(rows) == len(lines) and rendered == set(lines)
