"""Values the installed MLflow's SQL store derives when it writes a trace or an assessment.

Newer MLflow releases promote some trace metadata into columns (session id, token usage, cost),
move the trace name tag into a column, and store an aggregate of each assessment value. Which of
these exist depends on the installed release, so they are computed here by that release's own
code, never by a copy that would drift, and checked against the table its own migrations made
(the staged schema's columns, as ``etl.sql_limits.Limits`` lists them).

Importing MLflow costs seconds of CPU, so this runs in the main process on each batch that holds
traces or assessments (``apply``), not in the worker processes that parse: MLflow is imported at
most once per run (and not at all for a tree without traces), where the schema build on a first
run imports it anyway. Its ORM models are not imported: they would add SQLAlchemy's ORM, ~0.5 s
of CPU, to a small tree's run.
"""

from __future__ import annotations

import json
from functools import cache

from etl.rows import RowBatch
from etl.sql_limits import Limits

TRACE_NAME_TAG = "mlflow.traceName"


@cache
def _analytics():
    try:
        from mlflow.store.tracking.utils import trace_analytics
    except ImportError:  # releases before trace analytics columns
        return None
    return trace_analytics


def trace_columns(tags: dict[str, str], metadata: dict[str, str], has_trace_name: bool) -> dict:
    """Derived trace_info columns; removes what they absorb from tags and metadata in place."""
    columns: dict = {}
    if has_trace_name and TRACE_NAME_TAG in tags:
        columns["trace_name"] = tags.pop(TRACE_NAME_TAG)
    analytics = _analytics()
    if analytics is not None:
        columns.update(analytics.analytics_columns_from_metadata(metadata))
        for key in analytics.PROMOTED_TRACE_METADATA_KEYS:
            metadata.pop(key, None)
    return columns


def assessment_columns(value) -> dict:
    analytics = _analytics()
    if analytics is None or not hasattr(analytics, "assessment_aggregate"):
        return {}
    aggregate, numeric = analytics.assessment_aggregate(value)
    return {"aggregate_value": aggregate, "is_numeric_value": numeric}


def needed(batch: RowBatch) -> bool:
    return bool(batch.rows.get("trace_info") or batch.rows.get("assessments"))


def apply(batch: RowBatch, limits: Limits) -> None:
    """Fill the derived columns of a batch's traces and assessments, in place; tags and metadata
    that a column absorbs leave their tables, as the SQL store does. ``limits``: the staged
    schema's columns."""
    traces = batch.rows.get("trace_info") or []
    if traces:
        has_trace_name = ("trace_info", "trace_name") in limits
        tags = _by_trace(batch.rows.get("trace_tags", ()))
        metadata = _by_trace(batch.rows.get("trace_request_metadata", ()))
        for row in traces:
            trace_id = row["request_id"]
            pairs = tags.setdefault(trace_id, {}), metadata.setdefault(trace_id, {})
            row.update(trace_columns(*pairs, has_trace_name))
        batch.rows["trace_tags"] = _rows(tags)
        batch.rows["trace_request_metadata"] = _rows(metadata)
    for row in batch.rows.get("assessments") or ():
        row.update(assessment_columns(json.loads(row["value"])))


def _by_trace(rows) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for trace_id, key, value in rows:
        out.setdefault(trace_id, {})[key] = value
    return out


def _rows(by_trace: dict[str, dict[str, str]]) -> list[tuple[str, str, str]]:
    return [(trace_id, k, v) for trace_id, pairs in by_trace.items() for k, v in pairs.items()]
