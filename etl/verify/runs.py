"""Runs: info, params, tags, metric histories, latest metrics, inputs and outputs.

Two ways to prove a run, tried in this order:

1. Bytes (no MLflow). The target is rendered into what MLflow's FileStore writes and compared
   with the run's files: a param or tag file holds its value's UTF-8 bytes, a metric file one
   line ``f"{timestamp} {value} {step}\\n"`` per point (``FileStore._log_run_metric``), meta.yaml
   is parsed with PyYAML's loader as MLflow's ``read_yaml`` does. Nothing of the source is
   parsed by our code, and MLflow is not imported: worker processes stay small.
2. MLflow's reader (``etl.verify.oracle``), for a run whose files the first way could not match
   byte for byte: a metric written as an int (``1`` where the target renders ``1.0``), a 2- or
   5-field metric line, a symlink, inputs and outputs, a real mismatch. This way reports.

The first way only ever says "equal" or "not sure", so a run it passes is one the second way
would pass too; every mismatch is reported by the second.
"""

from __future__ import annotations

import functools
import operator
import os
import sqlite3
from collections import defaultdict

import orjson

from etl.sql_limits import FLOAT_MAX
from etl.verify.compare import (
    _compare_dict,
    _compare_fields,
    _sql_value,
    metric_value_equal,
)
from etl.verify.files import (
    RUN_STATUS,
    SOURCE_TYPE,
    file_lines,
    key_files,
    parse_meta,
    read_bytes,
    read_meta,
    same_folders,
    same_values,
    yaml_scalar,
)
from etl.verify.proof import prove_each, target_rows, unreadable
from etl.verify.report import VerificationReport

RUN_NAME_TAG = "mlflow.runName"

# Of a metric row as the table holds it (_sql_row): MLflow's SQL store's latest is the greatest.
LATEST_ORDER = operator.itemgetter(1, 0, 2)

RUN_FIELDS = (
    "name", "experiment_id", "user_id", "status", "start_time", "end_time", "artifact_uri",
    "lifecycle_stage",
)
# Run columns MLflow's RunInfo does not carry, so its reader never shows them: compared with the
# run's meta.yaml as the file holds it.
RUN_META_FIELDS = ("deleted_time", "source_type", "source_name", "entry_point_name", "source_version")


def verify_runs(
    mlruns: str, staging: str, experiment_id: str, exp_dir: str, names: list[str],
    skipped: frozenset[str] = frozenset(), id_map: dict[str, str] | None = None,
) -> VerificationReport:
    """The run folders ``names`` of one experiment folder against the target (whose renumbered
    experiment ids go back through ``id_map``, old -> new, before any comparison): by bytes,
    then with MLflow's reader for the runs the bytes could not prove."""
    report, unsure = prove_runs(staging, experiment_id, exp_dir, names, skipped, id_map)
    if unsure:
        report.merge(check_runs(mlruns, staging, experiment_id, exp_dir, unsure, id_map))
    return report


def prove_runs(
    staging: str, experiment_id: str, exp_dir: str, names: list[str],
    skipped: frozenset[str] = frozenset(), id_map: dict[str, str] | None = None,
) -> tuple[VerificationReport, list[str]]:
    """(what the bytes proved, the runs they could not): imports no MLflow."""
    left_out = VerificationReport()
    if skipped:
        left_out.skip("runs", sum(1 for n in names if n in skipped))
        names = [n for n in names if n not in skipped]

    def matches(report, name, target):
        return _matches_files(report, exp_dir, experiment_id, name, target)

    report, unsure = prove_each(staging, names, _target_runs, "runs", matches, id_map)
    report.merge(left_out)
    return report, unsure


def check_runs(
    mlruns: str, staging: str, experiment_id: str, exp_dir: str, names: list[str],
    id_map: dict[str, str] | None = None,
) -> VerificationReport:
    """The runs ``names`` through MLflow's reader, which reports every difference."""
    from etl.verify.oracle import tracking_store

    report = VerificationReport()
    target = target_rows(staging, names, _target_runs, "runs", id_map)
    store = tracking_store(mlruns)
    for name in names:
        _verify_run_with_mlflow(report, store, exp_dir, experiment_id, name, target)
    return report


def _target_runs(conn: sqlite3.Connection, run_ids: list[str]) -> dict:
    marks = ",".join("?" * len(run_ids))
    runs = {}
    for row in conn.execute(
        f"SELECT run_uuid, {', '.join(RUN_FIELDS + RUN_META_FIELDS)} FROM runs WHERE run_uuid IN ({marks})",
        run_ids,
    ):
        runs[row[0]] = dict(zip(RUN_FIELDS + RUN_META_FIELDS, row[1:]))
        runs[row[0]]["experiment_id"] = str(row[2])
    params, tags = defaultdict(dict), defaultdict(dict)
    for run_id, key, value in conn.execute(
        f'SELECT run_uuid, "key", value FROM params WHERE run_uuid IN ({marks})', run_ids
    ):
        params[run_id][key] = value
    for run_id, key, value in conn.execute(
        f'SELECT run_uuid, "key", value FROM tags WHERE run_uuid IN ({marks})', run_ids
    ):
        tags[run_id][key] = value
    history = _histories(conn, run_ids, marks)
    history_keys = defaultdict(set)
    for run_id, key in history:
        history_keys[run_id].add(key)
    latest = defaultdict(dict)
    for run_id, key, ts, step, value, is_nan in conn.execute(
        f'SELECT run_uuid, "key", timestamp, step, value, is_nan FROM latest_metrics '
        f"WHERE run_uuid IN ({marks})",
        run_ids,
    ):
        latest[run_id][key] = (ts, step, value, is_nan)
    input_tags = defaultdict(list)
    for input_uuid, name, value in conn.execute(
        # destination_type lets the query use MLflow's index on inputs instead of a scan per chunk.
        f"SELECT t.input_uuid, t.name, t.value FROM input_tags t JOIN inputs i "
        f"ON i.input_uuid = t.input_uuid WHERE i.destination_type = 'RUN' AND i.destination_id IN ({marks})",
        run_ids,
    ):
        input_tags[input_uuid].append((name, value))
    inputs = defaultdict(list)
    for run_id, input_uuid, *dataset in conn.execute(
        f"SELECT i.destination_id, i.input_uuid, d.name, d.digest FROM inputs i "
        f"LEFT JOIN datasets d ON d.dataset_uuid = i.source_id "
        f"WHERE i.source_type = 'DATASET' AND i.destination_type = 'RUN' "
        f"AND i.destination_id IN ({marks})",
        run_ids,
    ):
        inputs[run_id].append(tuple(dataset) + (tuple(sorted(input_tags[input_uuid])),))
    model_inputs, outputs = defaultdict(list), defaultdict(list)
    for source_type, run_id, model_id, step in conn.execute(
        f"SELECT source_type, source_id, destination_id, step FROM inputs "
        f"WHERE source_type IN ('RUN_INPUT', 'RUN_OUTPUT') AND source_id IN ({marks})",
        run_ids,
    ):
        if source_type == "RUN_INPUT":
            model_inputs[run_id].append(model_id)
        else:
            outputs[run_id].append((model_id, step))
    return {
        "runs": runs, "params": params, "tags": tags, "history": history,
        "history_keys": history_keys, "latest": latest, "inputs": inputs,
        "model_inputs": model_inputs, "outputs": outputs,
    }


def _histories(conn, run_ids: list[str], marks: str) -> dict[tuple[str, str], list[tuple]]:
    """(run, key) -> the series' rows (timestamp, value, step) by step, then as written, a NaN's
    value None: a line of the file logged step after step, which _history_matches tries first."""
    where = f"FROM metrics WHERE run_uuid IN ({marks})"
    # MLflow's SQL store reads a row flagged NaN as NaN whatever its value column holds.
    point = 'timestamp, CASE WHEN is_nan THEN NULL ELSE value END, step'
    if not isinstance(conn, sqlite3.Connection):
        history = defaultdict(list)
        for run_id, key, *row in conn.execute(
            f'SELECT run_uuid, "key", {point} {where} ORDER BY run_uuid, "key", step', run_ids
        ):
            history[(run_id, key)].append(tuple(row))
        return history
    # A Python object per value is most of the cost of 10 M rows: the rows come without their
    # run and key (two strings each), and each series is a slice of them, sized by a count off
    # the (run_uuid, key, step) index. One read transaction: both queries see the same rows.
    conn.execute("BEGIN")
    try:
        series = conn.execute(
            f'SELECT run_uuid, "key", COUNT(*) {where} GROUP BY run_uuid, "key" ORDER BY run_uuid, "key"', run_ids
        ).fetchall()
        rows = conn.execute(f'SELECT {point} {where} ORDER BY run_uuid, "key", step', run_ids).fetchall()
    finally:
        conn.execute("ROLLBACK")
    history, at = {}, 0
    for run_id, key, count in series:
        history[(run_id, key)] = rows[at : at + count]
        at += count
    return history


def _sql_row(row: tuple) -> tuple:
    """A row of _histories as MLflow's metrics table holds it: (timestamp, step, value, is_nan)."""
    ts, value, step = row
    return (ts, step, 0.0, 1) if value is None else (ts, step, value, 0)


# --- 1. bytes -------------------------------------------------------------------------------------


def _matches_files(report, exp_dir: str, experiment_id: str, run_id: str, target: dict) -> bool:
    """True when the target provably holds exactly what the run folder holds (counted in the
    report); False when unsure (nothing counted: MLflow's reader takes the run over)."""
    run_dir = os.path.join(exp_dir, run_id)
    row = target["runs"].get(run_id)
    path = os.path.join(run_dir, "meta.yaml")
    data = read_bytes(path)
    if data is None:
        return unreadable(report, "runs", run_id, path, row, experiment_id)
    if row is None:
        return False
    # The file exactly as MLflow writes it for the target's row: then it holds those fields,
    # and parsing it would tell nothing more. Else it is parsed and compared field by field.
    rendered = row["experiment_id"] == experiment_id and data == _rendered_meta(row, run_id)
    meta = None if rendered else parse_meta(data)
    if not rendered and (meta is None or not _info_matches(meta, run_id, experiment_id, row)):
        return False
    if not _inputs_match(run_dir, exp_dir, run_id, target):
        return False
    tags = key_files(os.path.join(run_dir, "tags"))
    metrics = key_files(os.path.join(run_dir, "metrics"))
    if tags is None or metrics is None or not same_values(tags, target["tags"].get(run_id, {})):
        return False
    if not same_folders(run_dir, {"params": target["params"].get(run_id, {})}):
        return False
    if not rendered and row["name"] != _run_name(meta, tags):
        return False
    latest = target["latest"].get(run_id, {})
    if not (metrics.keys() == latest.keys() == target["history_keys"].get(run_id, set())):
        return False
    history = target["history"]
    for key, data in metrics.items():
        rows = history[(run_id, key)]
        if not _history_matches(data, rows) or _latest_of(rows) != latest[key]:
            return False
    for entity in ("runs", "params", "tags", "inputs", "latest_metrics"):
        report.checked(entity)
    report.checked("metrics", len(metrics))
    for key, data in metrics.items():
        # The lines matched the rows as a set: the lines beyond the rows repeat a point. (As
        # file_lines splits them, counted without decoding: the file matched, so it is UTF-8.)
        lines = data.count(b"\n") + (not data.endswith(b"\n"))
        report.count_duplicates("metrics", run_id, key, lines - len(history[(run_id, key)]))
        # The lines matched the rows rendered: only an +-Inf value is spelled with "inf".
        if b"inf" in data:
            report.count_unrepresentable("metrics", run_id, key, (
                float(line.split(" ")[1]) for line in data.decode().split("\n") if "inf" in line))
    return True


# InputVertexType / OutputVertexType names (mlflow/protos/service.proto), the values
# FileStore._FileStoreInput/_FileStoreOutput accept.
INPUT_VERTEX_TYPES = frozenset({"RUN", "DATASET", "MODEL"})
OUTPUT_VERTEX_TYPES = frozenset({"RUN_OUTPUT", "MODEL_OUTPUT"})


def _inputs_match(run_dir: str, exp_dir: str, run_id: str, target: dict) -> bool:
    """The run's inputs/ and outputs/ folders, read as FileStore._get_all_inputs and
    _get_all_outputs read them, hold what the target's inputs rows say."""
    datasets, models, outputs = [], [], []
    for folder, kinds in (("inputs", INPUT_VERTEX_TYPES), ("outputs", OUTPUT_VERTEX_TYPES)):
        try:
            with os.scandir(os.path.join(run_dir, folder)) as it:
                items = list(it)
        except FileNotFoundError:
            continue
        except OSError:
            return False
        for item in items:
            if not item.is_dir():
                continue  # a loose file: not an input to MLflow's migration nor the load
            meta = read_meta(item.path)
            if (meta is None or meta.get("source_type") not in kinds
                    or meta.get("destination_type") not in kinds
                    or not {"source_id", "destination_id", "tags"} <= meta.keys()):
                return False
            if folder == "outputs":
                if "step" not in meta:
                    return False
                if meta["destination_type"] == "MODEL_OUTPUT":
                    outputs.append((meta["destination_id"], meta["step"]))
            elif meta["source_type"] == "MODEL":
                models.append(meta["source_id"])
            elif meta["source_type"] == "DATASET":
                dataset = _dataset(exp_dir, meta["source_id"])
                if dataset is False or not isinstance(meta["tags"], dict):
                    return False
                if dataset is not None:  # MLflow skips an input whose dataset is gone
                    datasets.append(dataset + (tuple(sorted(meta["tags"].items())),))
    return (
        sorted(datasets) == sorted(target["inputs"].get(run_id, []))
        and sorted(models) == sorted(target["model_inputs"].get(run_id, []))
        and sorted(outputs) == sorted(target["outputs"].get(run_id, []))
    )


@functools.lru_cache(maxsize=4096)
def _dataset(exp_dir: str, dataset_id: str):
    """(name, digest) of an experiment's dataset folder; None if there is no such folder, False
    if MLflow's reader would have to say why it cannot read it. (The tree does not change while
    it is verified; a worker process verifies one tree.)"""
    names = _dataset_names(exp_dir)
    if names is None:
        return False
    if dataset_id not in names:
        return None
    meta = read_meta(os.path.join(exp_dir, "datasets", dataset_id))
    if meta is None or not {"name", "digest", "source_type", "source"} <= meta.keys():
        return False
    return meta["name"], meta["digest"]


@functools.lru_cache(maxsize=64)
def _dataset_names(exp_dir: str) -> frozenset[str] | None:
    try:
        return frozenset(os.listdir(os.path.join(exp_dir, "datasets")))
    except FileNotFoundError:  # MLflow's reader: no datasets, so every dataset input is skipped
        return frozenset()
    except OSError:
        return None


STATUS_NUMBER = {name: number for number, name in RUN_STATUS.items()}
SOURCE_TYPE_NUMBER = {name: number for number, name in SOURCE_TYPE.items()}


def _rendered_meta(row: dict, run_id: str) -> bytes | None:
    """A run's meta.yaml as the installed MLflow's FileStore writes it for this row
    (``_make_persisted_run_info_dict``, keys sorted by PyYAML), or None if not certain."""
    if (not row["name"] or row["status"] not in STATUS_NUMBER or row["source_type"] not in SOURCE_TYPE_NUMBER
            or row["user_id"] is None or row["start_time"] is None):  # MLflow's RunInfo refuses those
        return None
    fields = {
        "artifact_uri": row["artifact_uri"], "deleted_time": row["deleted_time"],
        "end_time": row["end_time"], "entry_point_name": row["entry_point_name"],
        "experiment_id": row["experiment_id"], "lifecycle_stage": row["lifecycle_stage"],
        "run_id": run_id, "run_name": row["name"], "source_name": row["source_name"],
        "source_type": SOURCE_TYPE_NUMBER[row["source_type"]], "source_version": row["source_version"],
        "start_time": row["start_time"], "status": STATUS_NUMBER[row["status"]], "tags": [],
        "user_id": row["user_id"],
    }
    if row["deleted_time"] is None:
        del fields["deleted_time"]  # only a deleted run's file has one
    lines = []
    for key, value in fields.items():
        text = "[]" if key == "tags" else yaml_scalar(value)
        if text is None:
            return None
        lines.append(f"{key}: {text}\n")
    return "".join(lines).encode()


def _info_matches(meta: dict, run_id: str, experiment_id: str, row: dict) -> bool:
    """meta.yaml holds the target's run fields, read the way MLflow's reader reads them
    (``_read_persisted_run_info_dict``; the name is checked with the tags)."""
    if meta.get("run_id") != run_id or row["experiment_id"] != experiment_id:
        return False
    status = meta.get("status", 1)
    exp = meta.get("experiment_id")
    if type(status) is not int or status not in RUN_STATUS or str(exp) != experiment_id:
        return False
    # RunInfo requires these keys (and user_id, start_time not None); MLflow's reader says why not.
    if "end_time" not in meta or meta.get("user_id") is None or meta.get("start_time") is None:
        return False
    source_type = meta.get("source_type", 4)
    if type(source_type) is int:
        if source_type not in SOURCE_TYPE:
            return False
        source_type = SOURCE_TYPE[source_type]
    source = {
        "experiment_id": experiment_id, "user_id": meta["user_id"], "status": RUN_STATUS[status],
        "start_time": meta["start_time"], "end_time": meta["end_time"],
        "artifact_uri": meta.get("artifact_uri"),
        "lifecycle_stage": meta["lifecycle_stage"] if "lifecycle_stage" in meta else "active",
        "deleted_time": meta.get("deleted_time"), "source_type": source_type,
        **{f: meta.get(f, "") for f in ("source_name", "entry_point_name", "source_version")},
    }
    return all(source[f] == row[f] for f in source)


def _run_name(meta: dict, tags: dict[str, bytes]):
    """FileStore: meta.yaml's run_name, or else the mlflow.runName tag (old trees)."""
    name = meta.get("run_name")
    if not name and tags.get(RUN_NAME_TAG):
        return tags[RUN_NAME_TAG].decode("utf-8", "replace")
    return name


def _line(ts: int, value: float | None, step: int) -> str:
    """A metric row as FileStore._log_run_metric writes it (the SQL store's NaN and +-Inf
    turned back into what was logged)."""
    if value is None:
        return f"{ts} nan {step}"
    if value == FLOAT_MAX:
        return f"{ts} inf {step}"
    if value == -FLOAT_MAX:
        return f"{ts} -inf {step}"
    return f"{ts} {value!r} {step}"


def _history_matches(data: bytes, rows: list[tuple]) -> bool:
    """The file's lines, as a set (SQL keeps one row for repeated identical points), are the
    target's rows rendered, one line per row."""
    # Most often the file is the rows rendered in the order the load wrote them, line for line:
    # one comparison of bytes, the rendering done by orjson in C ([[ts,value,step],...] made
    # lines). Its floats are the shortest that read back as the same double, so a file equal to
    # them holds the rows for float(), MLflow's reader, whatever way they are spelled; Python's
    # spelling differs below 1e-4 (1e-05, orjson 0.00001): Python's rendering below takes those,
    # and an Inf (stored as the largest float, which orjson renders as that float), in the file's
    # order first, then as a set.
    if data == orjson.dumps(rows)[2:-2].replace(b"],[", b"\n").replace(b",", b" ").replace(b"null", b"nan") + b"\n":
        return True
    rendered = [_line(ts, value, step) for ts, value, step in rows]
    if data == ("\n".join(rendered) + "\n").encode():
        return True
    lines = file_lines(data)
    if lines is None:
        return False
    unique = set(rendered)
    return len(unique) == len(rows) and unique == set(lines)


def _latest_of(rows: list[tuple]) -> tuple | None:
    """The SQL store's latest point of a history equal to the file's: greatest (step,
    timestamp, value), NaN stored as 0. None when a NaN and a 0 tie: then the first in the
    file wins, and only MLflow's reader sees the file's order."""
    # The rows come by step (_histories): the candidates are the last step's.
    first = len(rows) - 1
    while first and rows[first - 1][2] == rows[-1][2]:
        first -= 1
    last_step = [_sql_row(row) for row in rows[first:]]
    best = max(last_step, key=LATEST_ORDER)
    if best[2] == 0.0 and sum(1 for r in last_step if r[:3] == best[:3]) > 1:
        return None
    return best


# --- 2. MLflow's reader ---------------------------------------------------------------------------


def _verify_run_with_mlflow(report, store, exp_dir: str, experiment_id: str, run_id: str, target) -> None:
    from mlflow.exceptions import MissingConfigException

    from etl.verify.oracle import read_run_meta

    run_dir = os.path.join(exp_dir, run_id)
    try:
        info, meta = read_run_meta(run_dir)
    except MissingConfigException:
        info = None
    except Exception as e:  # noqa: BLE001 - any reader failure is reported, with its text
        report.checked("runs")
        report.mismatch("runs", run_id, "readable by MLflow", str(e)[:200], None)
        return
    if info is None or info.experiment_id != experiment_id:
        # MLflow lists only the runs whose meta.yaml names this experiment (_list_run_infos).
        row = target["runs"].get(run_id)
        if row is not None and row["experiment_id"] == experiment_id:
            report.checked("runs")
            report.mismatch("runs", run_id, "presence", False, True)
        return
    _verify_run(report, store, run_dir, run_id, meta, target)


def _verify_run(report, store, run_dir: str, run_id: str, meta: dict, target) -> None:
    from etl.verify.oracle import metric_history, read_run

    report.checked("runs")
    row = target["runs"].get(run_id)
    if row is None:
        report.mismatch("runs", run_id, "presence", True, False)
        return
    try:
        info, params, tags, inputs, outputs, metric_keys = read_run(store, run_dir)
    except Exception as e:  # noqa: BLE001 - any reader failure is reported, with its text
        report.mismatch("runs", run_id, "readable by MLflow", str(e)[:200], None)
        return
    src = {
        "name": info.run_name, "experiment_id": info.experiment_id, "user_id": info.user_id,
        "status": info.status, "start_time": info.start_time, "end_time": info.end_time,
        "artifact_uri": info.artifact_uri, "lifecycle_stage": info.lifecycle_stage,
    }
    _compare_fields(report, "runs", run_id, RUN_FIELDS, src, row)
    _verify_run_meta(report, run_id, meta, row)

    report.checked("params")
    _compare_dict(report, "params", run_id, params, target["params"].get(run_id, {}))
    report.checked("tags")
    _compare_dict(report, "tags", run_id, tags, target["tags"].get(run_id, {}))

    _verify_run_inputs(report, run_id, inputs, outputs, target)

    report.checked("latest_metrics")
    target_latest = target["latest"].get(run_id, {})
    keys = set(metric_keys)
    for key in sorted(target_latest.keys() - keys):
        report.mismatch("latest_metrics", run_id, key, None, target_latest[key])
    history = target["history"]
    for key in sorted(keys):
        try:
            points = metric_history(store, info, key)
            if not points:  # as MLflow's reader says of it (FileStore._get_metric_from_file)
                raise ValueError(f"Metric '{key}' is malformed. No data found.")
        except Exception as e:  # noqa: BLE001 - any reader failure is reported, with its text
            report.checked("metrics")
            report.mismatch("metrics", f"{run_id}/{key}", "readable by MLflow", str(e)[:200], None)
            continue
        report.count_unrepresentable("metrics", run_id, key, (p[2] for p in points))
        rows = sorted(map(_sql_row, history.get((run_id, key), [])), key=lambda r: (r[1], r[0], r[2], r[3]))
        _verify_history(report, run_id, key, points, rows)
        _verify_latest(report, run_id, key, points, target_latest.get(key))
    for key in sorted(target["history_keys"].get(run_id, set()) - keys):
        report.checked("metrics")
        report.mismatch("metrics", f"{run_id}/{key}", "points", 0, len(history[(run_id, key)]))


def _verify_run_meta(report, run_id: str, meta: dict, row: dict) -> None:
    from mlflow.entities import SourceType

    source_type = meta.get("source_type", SourceType.LOCAL)
    expected = {
        "deleted_time": meta.get("deleted_time"),
        # An integer enum in the file (SourceType), its name in the database.
        "source_type": SourceType.to_string(source_type) if isinstance(source_type, int) else source_type,
        **{f: meta.get(f, "") for f in ("source_name", "entry_point_name", "source_version")},
    }
    _compare_fields(report, "runs", run_id, RUN_META_FIELDS, expected, row)


def _verify_run_inputs(report, run_id, inputs, outputs, target) -> None:
    report.checked("inputs")
    # Which datasets the run used, and the input's tags; the datasets themselves are compared
    # once each (_verify_datasets), so one wrong dataset field is reported once.
    datasets = sorted(
        (d.dataset.name, d.dataset.digest, tuple(sorted((t.key, t.value) for t in d.tags)))
        for d in inputs.dataset_inputs
    )
    if datasets != sorted(target["inputs"].get(run_id, [])):
        report.mismatch("inputs", run_id, "dataset_inputs", datasets, sorted(target["inputs"].get(run_id, [])))
    models = sorted(m.model_id for m in inputs.model_inputs or [])
    if models != sorted(target["model_inputs"].get(run_id, [])):
        report.mismatch("inputs", run_id, "model_inputs", models, sorted(target["model_inputs"].get(run_id, [])))
    outputs = sorted((m.model_id, m.step) for m in (outputs.model_outputs if outputs else []))
    if outputs != sorted(target["outputs"].get(run_id, [])):
        report.mismatch("inputs", run_id, "model_outputs", outputs, sorted(target["outputs"].get(run_id, [])))


def _verify_history(report, run_id: str, key: str, points, target) -> None:
    """The full history as a set: the FileStore may repeat an identical point, SQL cannot."""
    id_ = f"{run_id}/{key}"
    report.checked("metrics")
    unique = {}
    for ts, step, value in points:
        # NaN != NaN, so NaN points are keyed (and ordered) the way the SQL store holds them.
        point = (step, ts, value, 0) if value == value else (step, ts, 0.0, 1)
        unique.setdefault(point, (ts, step, value))
    report.count_duplicates("metrics", run_id, key, len(points) - len(unique))
    source = [unique[k] for k in sorted(unique)]
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
