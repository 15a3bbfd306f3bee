"""Traces, their tags, metadata and assessments, proven by bytes without MLflow.

As for runs (etl/verify/runs.py): the target is rendered into what MLflow's FileStore writes and
compared with the trace's files. A tag or metadata file holds its value's UTF-8 bytes;
``trace_info.yaml`` (MLflow 2.x's layout or 3.x's) and each assessment file are parsed with the
loader MLflow's ``read_yaml`` uses and compared, mapping against mapping, with the target's row
rendered into that file's own shape (``TraceInfo.to_dict``, ``Assessment.to_dictionary``).

This way only ever says "equal" or "not sure". A trace it is not sure of (a key it does not
render, another layout, a value of another type, metadata MLflow keeps in trace_info columns, a
real difference) goes whole to MLflow's reader (``etl.verify.compare.verify_traces``), which
reports what differs.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict

from etl.verify.compare import ASSESSMENT_COLUMNS, key_values
from etl.verify.files import iso_millis, key_files, parse_meta, read_bytes, same, same_values
from etl.verify.proof import prove_each, unreadable
from etl.verify.report import VerificationReport

TRACE_NAME_TAG = "mlflow.traceName"
# Metadata MLflow's SQL store keeps in trace_info columns instead of metadata rows
# (trace_analytics.PROMOTED_TRACE_METADATA_KEYS; the test suite checks this copy against the
# installed MLflow). A trace whose files hold one goes to MLflow's reader, which derives them.
PROMOTED_METADATA = frozenset({"mlflow.trace.session", "mlflow.trace.tokenUsage", "mlflow.trace.cost"})
# trace_info columns this module renders or knows to hold nothing of the files; any other column
# (token usage, cost, a newer MLflow's) must be NULL for a trace proven here.
KNOWN_COLUMNS = frozenset({
    "request_id", "experiment_id", "timestamp_ms", "execution_time_ms", "status", "client_request_id",
    "request_preview", "response_preview", "db_payload_generation", "trace_name",
})
# TraceState values, and the 2.x TraceStatus values that TraceStatus.to_state keeps as they are.
TRACE_STATES = frozenset({"STATE_UNSPECIFIED", "OK", "ERROR", "IN_PROGRESS"})
V2_STATUSES = frozenset({"OK", "ERROR", "IN_PROGRESS"})
# AssessmentMetadataKey.SOURCE_RUN_ID: where MLflow's entity finds an assessment's run.
SOURCE_RUN_ID = "mlflow.assessment.sourceRunId"


def prove_traces(
    staging: str, experiment_id: str, exp_dir: str, names: list[str], id_map: dict[str, str] | None = None,
) -> tuple[VerificationReport, list[str]]:
    """(what was proven, the traces it could not prove) for the trace folders ``names`` of one
    experiment folder."""
    def matches(report, name, target):
        return _trace_matches(report, exp_dir, experiment_id, name, target)

    return prove_each(staging, names, _target_traces, "info", matches, id_map)


def _target_traces(conn, trace_ids: list[str]) -> dict:
    marks = ",".join("?" * len(trace_ids))
    cursor = conn.execute(f"SELECT * FROM trace_info WHERE request_id IN ({marks})", trace_ids)
    columns = [d[0] for d in cursor.description]
    info = {r["request_id"]: r for r in (dict(zip(columns, row)) for row in cursor)}
    assessments = defaultdict(dict)
    for row in conn.execute(
        f"SELECT {', '.join(ASSESSMENT_COLUMNS)} FROM assessments WHERE trace_id IN ({marks})", trace_ids
    ):
        record = dict(zip(ASSESSMENT_COLUMNS, row))
        assessments[record["trace_id"]][record["assessment_id"]] = record
    return {
        "info": info, "assessments": assessments,
        "tags": key_values(conn, "trace_tags", "request_id", "key", "value", trace_ids),
        "metadata": key_values(conn, "trace_request_metadata", "request_id", "key", "value", trace_ids),
    }


def _trace_matches(report, exp_dir: str, experiment_id: str, trace_id: str, target: dict) -> bool:
    """True when the target provably holds exactly what the trace folder holds (counted in the
    report); False when unsure (nothing counted)."""
    trace_dir = os.path.join(exp_dir, "traces", trace_id)
    row = target["info"].get(trace_id)
    path = os.path.join(trace_dir, "trace_info.yaml")
    data = read_bytes(path)
    if data is None:
        return unreadable(report, "traces", trace_id, path, row, experiment_id)
    if row is None or row["experiment_id"] != experiment_id:
        return False
    info = parse_meta(data)
    if info is None or not _info_matches(info, trace_id, experiment_id, row):
        return False
    if any(row[c] is not None for c in row.keys() - KNOWN_COLUMNS):
        return False
    tags = key_files(os.path.join(trace_dir, "tags"))
    metadata = key_files(os.path.join(trace_dir, "request_metadata"))
    if tags is None or metadata is None or PROMOTED_METADATA & metadata.keys():
        return False
    # MLflow's SQL entity: the trace name lives in its column (where there is one), not a tag row.
    target_tags = dict(target["tags"].get(trace_id, {}))
    if "trace_name" in row:
        target_tags.pop(TRACE_NAME_TAG, None)
        if row["trace_name"] is not None:
            target_tags[TRACE_NAME_TAG] = row["trace_name"]
    if not same_values(tags, target_tags) or not same_values(metadata, target["metadata"].get(trace_id, {})):
        return False
    count = _assessments_match(os.path.join(trace_dir, "assessments"), trace_id,
                               target["assessments"].get(trace_id, {}))
    if count is None:
        return False
    report.checked("traces")
    report.checked("assessments", count)
    return True


def _info_matches(info: dict, trace_id: str, experiment_id: str, row: dict) -> bool:
    """trace_info.yaml is the target's row in the file's own layout: 2.x's TraceInfoV2 or 3.x's
    TraceInfo, as ``to_dict`` writes them."""
    view = dict(info)
    if view.get("assessments") == []:
        del view["assessments"]  # 2.x writes the (empty) list; the assessments have their folder
    if "request_id" in view:
        if (row["status"] not in V2_STATUSES or row["client_request_id"] is not None
                or row["request_preview"] is not None or row["response_preview"] is not None):
            return False
        expected = {
            "request_id": trace_id, "experiment_id": experiment_id, "timestamp_ms": row["timestamp_ms"],
            "execution_time_ms": row["execution_time_ms"], "status": row["status"],
        }
        return same(view, expected)
    if row["status"] not in TRACE_STATES:
        return False
    expected = {
        "trace_id": trace_id,
        "trace_location": {"mlflow_experiment": {"experiment_id": experiment_id}, "type": "MLFLOW_EXPERIMENT"},
        "request_time": iso_millis(row["timestamp_ms"]), "state": row["status"],
    }
    optional = {
        "execution_duration_ms": row["execution_time_ms"], "client_request_id": row["client_request_id"],
        "request_preview": row["request_preview"], "response_preview": row["response_preview"],
    }
    expected.update((k, v) for k, v in optional.items() if v is not None)
    return same(view, expected)


def _assessments_match(folder: str, trace_id: str, target: dict[str, dict]) -> int | None:
    """How many assessment files the folder holds, if each is exactly its target row; else None."""
    try:
        with os.scandir(folder) as it:
            entries = list(it)
    except FileNotFoundError:
        return 0 if not target and not os.path.lexists(folder) else None
    except OSError:
        return None
    if len(entries) != len(target):
        return None
    for entry in entries:
        assessment_id, dot, ext = entry.name.partition(".")
        row = target.get(assessment_id)
        if row is None or (dot, ext) != (".", "yaml") or not entry.is_file(follow_symlinks=False):
            return None
        data = read_bytes(entry.path, regular=True)
        raw = None if data is None else parse_meta(data)
        if raw is None:
            return None
        view, rendered = _assessment_view(raw), _rendered_assessment(row, trace_id)
        if view is None or rendered is None or not same(view, rendered):
            return None
    return len(entries)


def _assessment_view(raw: dict) -> dict | None:
    """An assessment file as MLflow's reader takes it, in the file's shape: ``valid`` defaults
    to true, the run is the ``run_id`` key or else the source-run metadata, and an expectation's
    ``serialized_value`` is its JSON, loaded."""
    view = dict(raw)
    metadata = view.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        return None
    view["run_id"] = view.get("run_id") or (metadata or {}).get(SOURCE_RUN_ID)
    view.setdefault("valid", True)
    expectation = view.get("expectation")
    if isinstance(expectation, dict) and "serialized_value" in expectation:
        serialized = expectation["serialized_value"]
        if (len(expectation) != 1 or not isinstance(serialized, dict)
                or serialized.keys() != {"serialization_format", "value"}
                or serialized["serialization_format"] != "JSON_FORMAT"
                or not isinstance(serialized["value"], str)):
            return None
        try:
            view["expectation"] = {"value": json.loads(serialized["value"])}
        except ValueError:
            return None
    return view


def _rendered_assessment(row: dict, trace_id: str) -> dict | None:
    """An assessments row in the shape of its file (``Assessment.to_dictionary``), or None for
    what this module does not render (an issue reference, JSON that does not load)."""
    kind = row["assessment_type"]
    if kind not in ("feedback", "expectation"):
        return None
    try:
        value = None if row["value"] is None else json.loads(row["value"])
        error = None if row["error"] is None else json.loads(row["error"])
        metadata = json.loads(row["assessment_metadata"]) if row["assessment_metadata"] else None
    except ValueError:
        return None
    body = {"value": value}
    if error is not None:
        if not isinstance(error, dict):
            return None
        body["error"] = {k: v for k, v in error.items() if v is not None}
    source = {"source_type": row["source_type"]}
    if row["source_id"] is not None:
        source["source_id"] = row["source_id"]
    out = {
        "assessment_id": row["assessment_id"], "assessment_name": row["name"], "trace_id": trace_id,
        kind: body, "source": source, "create_time": iso_millis(row["created_timestamp"]),
        "last_update_time": iso_millis(row["last_updated_timestamp"]), "run_id": row["run_id"],
        "valid": None if row["valid"] is None else bool(row["valid"]),
    }
    for key in ("span_id", "rationale", "overrides"):
        if row[key] is not None:
            out[key] = row[key]
    if metadata:
        out["metadata"] = metadata
    return out
