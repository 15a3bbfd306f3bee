"""Values the installed MLflow's SQL store derives when it writes a trace or an assessment.

Newer MLflow releases promote some trace metadata into columns (session id, token usage, cost),
move the trace name tag into a column, and store an aggregate of each assessment value. Which of
these exist depends on the installed release, so they are computed here by that release's own
code and its own table definition, never by a copy that would drift. MLflow is imported lazily:
only trees that hold traces pay for it, once per worker process.
"""

from __future__ import annotations

from functools import cache

TRACE_NAME_TAG = "mlflow.traceName"


@cache
def trace_info_columns() -> frozenset[str]:
    from mlflow.store.tracking.dbmodels.models import SqlTraceInfo

    return frozenset(c.name for c in SqlTraceInfo.__table__.columns)


@cache
def _analytics():
    try:
        from mlflow.store.tracking.utils import trace_analytics
    except ImportError:  # releases before trace analytics columns
        return None
    return trace_analytics


def trace_columns(tags: dict[str, str], metadata: dict[str, str]) -> dict:
    """Derived trace_info columns; removes what they absorb from tags and metadata in place."""
    columns: dict = {}
    if "trace_name" in trace_info_columns() and TRACE_NAME_TAG in tags:
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
