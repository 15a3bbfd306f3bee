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
    "datasets": (
        "dataset_uuid",
        "experiment_id",
        "name",
        "digest",
        "dataset_source_type",
        "dataset_source",
        "dataset_schema",
        "dataset_profile",
    ),
    "inputs": ("input_uuid", "source_type", "source_id", "destination_type", "destination_id", "step"),
    "input_tags": ("input_uuid", "name", "value"),
    "logged_models": (
        "model_id",
        "experiment_id",
        "name",
        "artifact_location",
        "creation_timestamp_ms",
        "last_updated_timestamp_ms",
        "status",
        "lifecycle_stage",
        "model_type",
        "source_run_id",
        "status_message",
    ),
    "logged_model_params": ("model_id", "experiment_id", "param_key", "param_value"),
    "logged_model_tags": ("model_id", "experiment_id", "tag_key", "tag_value"),
    "logged_model_metrics": (
        "model_id",
        "metric_name",
        "metric_timestamp_ms",
        "metric_step",
        "metric_value",
        "experiment_id",
        "run_id",
        "dataset_uuid",
        "dataset_name",
        "dataset_digest",
    ),
    # Trace rows are dicts (see DICT_TABLES); these are the columns every MLflow 3.x schema has.
    "trace_info": (
        "request_id",
        "experiment_id",
        "timestamp_ms",
        "execution_time_ms",
        "status",
        "client_request_id",
        "request_preview",
        "response_preview",
    ),
    "trace_tags": ("request_id", "key", "value"),
    "trace_request_metadata": ("request_id", "key", "value"),
    "assessments": (
        "assessment_id",
        "trace_id",
        "name",
        "assessment_type",
        "value",
        "error",
        "created_timestamp",
        "last_updated_timestamp",
        "source_type",
        "source_id",
        "run_id",
        "span_id",
        "rationale",
        "overrides",
        "valid",
        "assessment_metadata",
    ),
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

# Tables where a second row with the same primary key is the same fact logged again: MLflow's
# FileStore appends a line per log call, while its SQL store keeps the first row of a key. For run
# metrics the key spans every column (exact duplicates collapse); for logged-model metrics the SQL
# store also keeps the first point of a (model, name, timestamp, step, run).
DEDUPLICATED_TABLES = frozenset({"metrics", "logged_model_metrics"})

# Tables whose rows are dicts: their columns depend on the installed MLflow (trace analytics
# columns such as session_id or token counts, derived by MLflow's own code), so each row names
# its columns. Low volume: one row per trace or assessment.
DICT_TABLES = frozenset({"trace_info", "assessments"})


def printable(text):
    """text as it can be printed and stored: a name that is not valid UTF-8 comes from the OS
    as lone surrogates (PEP 383), which no UTF-8 encoder takes; they are shown as backslash
    escapes of the bytes they stand for. None stays None."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the source tree: the file, where in it, and why; and which entity
    (kind and id, as the verifier names them) is left out because of it, in which source (its
    place among the --source folders)."""

    path: str
    reason: str
    line: int | None = None
    entity: str | None = None
    entity_id: str | None = None
    source: int = 0

    def __post_init__(self) -> None:
        # Named in the output and the JSON report whatever bytes the tree's names hold.
        object.__setattr__(self, "path", printable(self.path))
        object.__setattr__(self, "reason", printable(self.reason))

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.reason}"


@dataclass(frozen=True)
class Stray:
    """A file or folder under the source that is not FileStore data: not migrated, named.
    ``warning`` says why it may be data after all (YAML where MLflow writes none)."""

    path: str
    is_dir: bool
    warning: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", printable(self.path))


@dataclass
class Census:
    """Every path under the source, in one of three classes: files migrated (per table they go
    into), folders kept in place by design (artifacts, per kind), and strays (not FileStore data).
    ``flagged``: migrated entries the user should judge (a symlink out of the tree), each with
    its warning. ``problems``: entries that cannot be classified at all (a name that is not
    UTF-8, a symlink loop), invalid input like a bad file."""

    migrated: Counter = field(default_factory=Counter)
    kept: Counter = field(default_factory=Counter)
    strays: list[Stray] = field(default_factory=list)
    flagged: list[Stray] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def merge(self, other: Census) -> None:
        self.migrated.update(other.migrated)
        self.kept.update(other.kept)
        self.strays.extend(other.strays)
        self.flagged.extend(other.flagged)
        self.problems.extend(other.problems)

    @property
    def warnings(self) -> list[Stray]:
        return [s for s in self.strays if s.warning] + self.flagged


# (table, entity id, metric key, "NaN" | "+Inf" | "-Inf") -> points. MLflow's SQL store holds
# these metric values otherwise than the file does, with no way back: a logged-model metric's
# NaN becomes 0 (no flag), any +-Inf becomes +-FLOAT_MAX. A run metric's NaN keeps its is_nan
# flag, so it is not counted.
LossyKey = tuple[str, str, str, str]

# (table, entity id, metric key, exact) -> points of a metric file the database holds once,
# because an earlier point of the same series has the same key in the target. Exact: the same
# point again (the SQL key of run metrics spans every column); MLflow writes such lines itself (a
# metric logged in a run that then logs a model is logged again, for the model). Not exact
# (logged-model metrics only): the same timestamp, step and run with another value or dataset,
# which the SQL key leaves out; the first is kept, as MLflow's SQL store keeps it.
DuplicateKey = tuple[str, str, str, bool]


@dataclass
class Scratch:
    """Rows a producer wrote into a database file of its own instead of handing them over
    (etl.sink.sqlite.scratch): where, and how many per table per run id. ``skip`` leaves a run's
    rows out (its id was found twice); the writer copies the rest."""

    path: str
    runs: dict[str, dict[str, int]]
    skipped: frozenset[str] = frozenset()

    def skip(self, run_ids) -> None:
        self.skipped = self.skipped | frozenset(run_ids)

    def counts(self) -> dict[str, int]:
        return {table: sum(n for run, n in per_run.items() if run not in self.skipped)
                for table, per_run in self.runs.items()}  # fmt: skip


@dataclass
class RowBatch:
    """What one work unit produced: rows per table, the files read, the census of its folders,
    any problems, the metric values the database cannot hold as written, and the metric points
    it holds once. The rows of some tables may be in a scratch file instead (``scratch``) when
    the target's writer takes them so."""

    rows: dict[str, list[tuple]] = field(default_factory=dict)
    files: int = 0
    problems: list[Problem] = field(default_factory=list)
    census: Census = field(default_factory=Census)
    lossy: Counter[LossyKey] = field(default_factory=Counter)
    duplicates: Counter[DuplicateKey] = field(default_factory=Counter)
    # The run, trace and model folders the unit held: what the progress display counts.
    folders: int = 0
    # The mlruns folder the unit is in, to tell the links that leave it (None: not known).
    root: str | None = None
    scratch: Scratch | None = None

    def read(self, table: str, files: int = 1) -> None:
        """Files read whose data goes into table."""
        self.files += files
        self.census.migrated[table] += files

    def add(self, table: str, row: tuple | dict) -> None:
        self.rows.setdefault(table, []).append(row)

    def extend(self, table: str, rows: list[tuple]) -> None:
        if rows:
            self.rows.setdefault(table, []).extend(rows)

    def count(self) -> int:
        spilled = sum(self.scratch.counts().values()) if self.scratch else 0
        return sum(len(r) for r in self.rows.values()) + spilled


class RowCounter(Counter):
    """Rows per table, for progress, the summary and the report."""

    def add_batch(self, batch: RowBatch) -> None:
        for table, rows in batch.rows.items():
            self[table] += len(rows)
        if batch.scratch:
            self.update(batch.scratch.counts())
