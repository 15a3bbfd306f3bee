"""Tables the migration fills, the columns it fills in each, and row batches.

Producers build plain tuples in the column order declared here (tuples are the cheapest thing to
pickle between processes and to hand to ``executemany``). The writer checks these lists against the
staged schema before loading, so a column MLflow adds or drops fails loudly instead of rotting.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

# table -> columns we fill, in tuple order
COLUMNS: dict[str, tuple[str, ...]] = {
    "experiments": (
        "experiment_id",
        "name",
        "artifact_location",
        "lifecycle_stage",
        "creation_time",
        "last_update_time",
    ),
    "experiment_tags": ("experiment_id", "key", "value"),
    "runs": (
        "run_uuid",
        "name",
        "source_type",
        "source_name",
        "entry_point_name",
        "user_id",
        "status",
        "start_time",
        "end_time",
        "deleted_time",
        "source_version",
        "lifecycle_stage",
        "artifact_uri",
        "experiment_id",
    ),
    "params": ("run_uuid", "key", "value"),
    "tags": ("run_uuid", "key", "value"),
    "metrics": ("run_uuid", "key", "timestamp", "step", "value", "is_nan"),
    "latest_metrics": ("run_uuid", "key", "timestamp", "step", "value", "is_nan"),
    "registered_models": ("name", "creation_time", "last_updated_time", "description"),
    "registered_model_tags": ("name", "key", "value"),
    "registered_model_aliases": ("name", "alias", "version"),
    "model_versions": (
        "name",
        "version",
        "creation_time",
        "last_updated_time",
        "description",
        "user_id",
        "current_stage",
        "source",
        "run_id",
        "status",
        "status_message",
        "run_link",
        "storage_location",
    ),
    "model_version_tags": ("name", "version", "key", "value"),
}

# Insert order: parents before children, so the finished file passes PRAGMA foreign_key_check
# in the same order a reader would expect, and the report lists entities in a natural order.
TABLES: tuple[str, ...] = tuple(COLUMNS)

# Tables whose primary key spans every column: a second identical row is the same fact logged
# twice (MLflow's FileStore appends a metric line per log call), so it collapses to one row.
DEDUPLICATED_TABLES = frozenset({"metrics"})


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the source tree: the file, where in it, and why."""

    path: str
    reason: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.reason}"


@dataclass
class RowBatch:
    """What one work unit produced: rows per table, the files read, and any problems."""

    rows: dict[str, list[tuple]] = field(default_factory=dict)
    files: int = 0
    problems: list[Problem] = field(default_factory=list)

    def add(self, table: str, row: tuple) -> None:
        self.rows.setdefault(table, []).append(row)

    def extend(self, table: str, rows: list[tuple]) -> None:
        if rows:
            self.rows.setdefault(table, []).extend(rows)

    def count(self) -> int:
        return sum(len(r) for r in self.rows.values())


class RowCounter(Counter):
    """Rows per table, for progress, the summary and the report."""

    def add_batch(self, batch: RowBatch) -> None:
        for table, rows in batch.rows.items():
            self[table] += len(rows)
