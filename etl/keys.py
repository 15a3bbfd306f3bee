"""Keys the target holds as one although the files hold them apart: found before anything is
written, and reported as invalid input.

SQLite and PostgreSQL compare MLflow's keys byte by byte. MySQL and MariaDB compare text by the
column's collation, and their default ones ignore case and trailing spaces (MariaDB's
utf8mb4_general_ci), or case and accents (MySQL 8's utf8mb4_0900_ai_ci): two params ``lr`` and
``LR`` of one run, two experiments ``Churn`` and ``churn``, two tags ``a`` and ``a `` would meet on
a primary or unique key, or be read back as one by MLflow's queries. The target says how it
compares (``KeyFolding``, etl.sink.mysql.collation: the collation of each key column, read from
the staged tables); this module finds the keys that compare equal:

- within one entity (a run's params, tags and metrics, an experiment's tags, a trace's tags, a
  logged model's params, tags and metrics, a registered model's tags, aliases and version tags):
  the entity cannot be migrated as the files hold it, like any value the target refuses; both
  files are named;
- between entities (experiment names, registered model names, run, trace, logged model and
  assessment ids, an experiment's datasets): the later one in the order the load reads them
  (the sources in their order; in one, experiment folders by id, active before deleted, models
  by name) is left out with ``--skip-invalid``, and the problem names both.

A target that compares bytes (``folding`` None) costs nothing here.
"""

from __future__ import annotations

from pathlib import Path

from etl.rows import COLUMNS, DICT_TABLES, Problem, RowBatch
from etl.source.extract import input_file, source_file, stable_id
from etl.source.layout import subdirs

# Keys held within one entity: table -> (entity kind, the entity's id column, columns that scope
# the key exactly, the key's text columns). Run metrics are checked through latest_metrics, which
# holds each (run, key) once.
WITHIN = {
    "experiment_tags": ("experiments", "experiment_id", ("experiment_id",), ("key",)),
    "params": ("runs", "run_uuid", ("run_uuid",), ("key",)),
    "tags": ("runs", "run_uuid", ("run_uuid",), ("key",)),
    "latest_metrics": ("runs", "run_uuid", ("run_uuid",), ("key",)),
    "input_tags": ("runs", None, ("input_uuid",), ("name",)),  # the run: through its input
    "trace_tags": ("traces", "request_id", ("request_id",), ("key",)),
    "trace_request_metadata": ("traces", "request_id", ("request_id",), ("key",)),
    "logged_model_params": ("logged_models", "model_id", ("model_id",), ("param_key",)),
    "logged_model_tags": ("logged_models", "model_id", ("model_id",), ("tag_key",)),
    "logged_model_metrics": ("logged_models", "model_id", ("model_id",), ("metric_name",)),
    "registered_model_tags": ("registered_models", "name", ("name",), ("key",)),
    "registered_model_aliases": ("registered_models", "name", ("name",), ("alias",)),
    "model_version_tags": ("registered_models", "name", ("name", "version"), ("key",)),
}
# Keys across entities: table -> (entity kind, the entity's id column, the key's text column).
# An experiment's datasets (keyed by experiment, name and digest) come in its own batch.
BETWEEN = {
    "experiments": ("experiments", "experiment_id", "name"),
    "runs": ("runs", "run_uuid", "run_uuid"),
    "trace_info": ("traces", "request_id", "request_id"),
    "logged_models": ("logged_models", "model_id", "model_id"),
    "registered_models": ("registered_models", "name", "name"),
    "assessments": ("traces", "trace_id", "assessment_id"),
}
DATASET_KEY = ("name", "digest")
KEY_COLUMNS = tuple(sorted(
    {(t, c) for t, (_, _, _, cols) in WITHIN.items() for c in cols}
    | {(t, c) for t, (_, _, c) in BETWEEN.items()} | {("datasets", c) for c in DATASET_KEY}
))

# The rows of an entity, per table: where its id sits (run inputs: see drop_entity).
ENTITY_ROWS = {
    "experiments": {"experiments": "experiment_id", "experiment_tags": "experiment_id", "datasets": "experiment_id"},
    "runs": {"runs": "run_uuid", "params": "run_uuid", "tags": "run_uuid", "metrics": "run_uuid",
             "latest_metrics": "run_uuid"},
    "traces": {"trace_info": "request_id", "trace_tags": "request_id", "trace_request_metadata": "request_id",
               "assessments": "trace_id"},
    "logged_models": {"logged_models": "model_id", "logged_model_params": "model_id",
                      "logged_model_tags": "model_id", "logged_model_metrics": "model_id"},
    "registered_models": {"registered_models": "name", "registered_model_tags": "name",
                          "registered_model_aliases": "name", "model_versions": "name",
                          "model_version_tags": "name"},
    "datasets": {"datasets": "dataset_uuid"},
}
_NOUNS = {"experiment_tags": "experiment tag", "params": "param", "tags": "tag", "latest_metrics": "metric",
          "input_tags": "dataset input tag", "trace_tags": "trace tag", "trace_request_metadata":
          "trace request metadata key", "logged_model_params": "logged model param", "logged_model_tags":
          "logged model tag", "logged_model_metrics": "logged model metric", "registered_model_tags":
          "registered model tag", "registered_model_aliases": "alias", "model_version_tags":
          "model version tag", "experiments": "experiment name", "runs": "run id", "trace_info": "trace id",
          "logged_models": "logged model id", "registered_models": "registered model name",
          "assessments": "assessment id", "datasets": "dataset"}


def getter(table: str, column: str):
    if table in DICT_TABLES:
        return lambda row: row.get(column)
    at = COLUMNS[table].index(column)
    return lambda row: row[at]


def drop_entity(batch: RowBatch, kind: str, ids: set) -> None:
    """Remove every row of the entities (kind, ids) from batch; a run takes its inputs and
    outputs (and their tags) along."""
    for table, column in ENTITY_ROWS[kind].items():
        rows = batch.rows.get(table)
        if rows:
            get = getter(table, column)
            batch.rows[table] = [r for r in rows if get(r) not in ids]
    if kind == "runs" and batch.rows.get("inputs"):
        gone = {r[0] for r in batch.rows["inputs"] if r[2] in ids or r[4] in ids}
        batch.rows["inputs"] = [r for r in batch.rows["inputs"] if r[0] not in gone]
        batch.rows["input_tags"] = [r for r in batch.rows.get("input_tags", ()) if r[0] not in gone]


class KeyCheck:
    """Finds the keys of each batch the target holds as one (see the module's summary). Lives in
    the consumer: it keeps what it has seen across batches, and asks the server to compare text
    that is not plain ASCII (``folding.folds``)."""

    def __init__(self, folding):
        self.folding = folding
        # etl.pipeline.Tree of the batch being checked: its rows hold the target's experiment
        # ids, problems name its folders.
        self.tree = None
        # table -> folded key -> (key, entity id, experiment id, row, tree): every key seen so
        # far, in every source.
        self.seen: dict[str, dict] = {table: {} for table in BETWEEN}
        # Tables whose keys are compared by the server's weights (a key that is not plain ASCII
        # came): their folded keys are the server's, from then on.
        self.by_server: set[str] = set()

    def check(self, batch: RowBatch, tree) -> list[Problem]:
        self.tree = tree
        problems = self._within(batch)
        problems += self._datasets(batch)
        problems += self._between(batch)
        return problems

    def _collation(self, table: str, column: str) -> str | None:
        return self.folding.collations.get((table, column))

    # --- where files are ------------------------------------------------------------------

    def _experiments_of(self, batch: RowBatch) -> dict[str, dict]:
        """kind -> entity id -> experiment id, for the entities whose rows are in batch."""
        return {
            "runs": {r[0]: r[-1] for r in batch.rows.get("runs", ())},
            "traces": {r["request_id"]: r["experiment_id"] for r in batch.rows.get("trace_info", ())},
            "logged_models": {r[0]: r[1] for r in batch.rows.get("logged_models", ())},
        }

    def _folder(self, kind: str, entity, exp_id, tree=None) -> Path:
        tree = tree or self.tree
        if kind == "experiments":
            return tree.folder(entity)
        if kind == "registered_models":
            return tree.mlruns / "models" / entity
        folder = tree.folder(exp_id)
        return folder / {"runs": "", "traces": "traces", "logged_models": "models"}[kind] / entity

    def _file(self, kind: str, entity, exp_id, table: str, row, tree=None) -> str:
        folder = self._folder(kind, entity, exp_id, tree)
        if table == "input_tags":
            return input_file(str(folder), row[0])
        return source_file(str(folder), table, row)

    def _same(self, collation: str) -> str:
        return f"are one key to the target, whose collation {self.folding.describe(collation)}"

    # --- within one entity ----------------------------------------------------------------

    def _within(self, batch: RowBatch) -> list[Problem]:
        problems: list[Problem] = []
        exps = self._experiments_of(batch)
        run_of_input = {r[0]: r[4] for r in batch.rows.get("inputs", ()) if r[3] == "RUN"}
        bad: dict[str, set] = {}
        for table, (kind, entity_column, scope, key) in WITHIN.items():
            rows = batch.rows.get(table)
            collations = [self._collation(table, c) for c in key]
            if not rows or not any(collations):
                continue
            entity_of = (lambda row: run_of_input.get(row[0])) if entity_column is None else getter(table, entity_column)
            scope_of = [getter(table, c) for c in scope]
            key_of = [getter(table, c) for c in key]
            folds = [self._folds(collation, {get(r) for r in rows}) if collation else None
                     for collation, get in zip(collations, key_of)]
            first: dict[tuple, tuple] = {}
            for row in rows:
                raw = tuple(get(row) for get in key_of)
                folded = tuple(f[v] if f is not None and v is not None else v for f, v in zip(folds, raw))
                where = (tuple(get(row) for get in scope_of), folded)
                seen = first.setdefault(where, (raw, row))
                if seen[0] == raw:
                    continue
                entity = entity_of(row)
                (a, row_a), (b, row_b) = sorted([seen, (raw, row)], key=lambda p: p[0])
                exp_id = entity if kind == "experiments" else exps.get(kind, {}).get(entity)
                shown = lambda k: k[0] if len(k) == 1 else k  # noqa: E731
                problems.append(Problem(
                    self._file(kind, entity, exp_id, table, row_b),
                    f"{_NOUNS[table]} {shown(b)!r} and {shown(a)!r} "
                    f"({self._file(kind, entity, exp_id, table, row_a)}) "
                    f"{self._same(next(c for c in collations if c))}",
                    None, kind, str(self.tree.folder_id(entity) if kind == "experiments" else entity),
                    self.tree.index))
                bad.setdefault(kind, set()).add(entity)
        for kind, ids in bad.items():
            drop_entity(batch, kind, ids)
        return problems

    # --- an experiment's datasets ---------------------------------------------------------

    def _datasets(self, batch: RowBatch) -> list[Problem]:
        rows = batch.rows.get("datasets")
        collations = [self._collation("datasets", c) for c in DATASET_KEY]
        if not rows or not any(collations):
            return []
        gets = [getter("datasets", c) for c in DATASET_KEY]
        folds = [self._folds(c, {get(r) for r in rows}) if c else None for c, get in zip(collations, gets)]
        first: dict[tuple, tuple] = {}
        problems, dropped = [], set()
        for row in sorted(rows, key=lambda r: (r[1], r[2], r[3])):
            raw = (row[2], row[3])
            folded = (row[1],) + tuple(f[v] if f is not None else v for f, v in zip(folds, raw))
            seen = first.setdefault(folded, (raw, row))
            if seen[0] == raw:
                continue
            folder = self.tree.folder(row[1]) / "datasets"
            folder_id = self.tree.folder_id(row[1])
            names = {stable_id(str(folder_id), "datasets", n): n for n in subdirs(str(folder))}
            problems.append(Problem(
                str(folder / names.get(row[0], "") / "meta.yaml"),
                f"dataset {raw[0]!r} (digest {raw[1]}) and {seen[0][0]!r} (digest {seen[0][1]}, "
                f"{folder / names.get(seen[1][0], '') / 'meta.yaml'}) "
                f"{self._same(next(c for c in collations if c))}",
                None, "datasets", f"{folder_id}/{names.get(row[0], row[0])}", self.tree.index))
            dropped.add(row[0])
        if dropped:
            drop_entity(batch, "datasets", dropped)
        return problems

    # --- across entities ------------------------------------------------------------------

    def _between(self, batch: RowBatch) -> list[Problem]:
        problems: list[Problem] = []
        trace_experiments = self._experiments_of(batch)["traces"]
        for table, (kind, entity_column, key) in BETWEEN.items():
            rows = batch.rows.get(table)
            collation = self._collation(table, key)
            if not rows or not collation:
                continue
            entity_of, key_of = getter(table, entity_column), getter(table, key)
            folds = self._folds_between(table, collation, [key_of(r) for r in rows])
            seen = self.seen[table]
            dropped = set()
            for row in rows:
                raw, entity = key_of(row), entity_of(row)
                here = (raw, entity, _experiment_of(table, row, trace_experiments), row, self.tree)
                other = seen.setdefault(folds[raw], here)
                if other is here or other[0] == raw:
                    continue  # a key seen once; or the very same key, which other checks handle
                # Kept: the one met first, whose rows may be written already (a unique key
                # would refuse the other's); the load meets the sources in their order, each
                # one's experiments by folder id (active, then deleted), models by name.
                keep, lose = other, here
                problems.append(Problem(
                    self._entity_file(kind, table, lose),
                    f"{_NOUNS[table]} {lose[0]!r} and {keep[0]!r} ({self._entity_file(kind, table, keep)}) "
                    f"{self._same(collation)}; the later one is left out", None, kind,
                    str(lose[4].folder_id(lose[1]) if kind == "experiments" else lose[1]), lose[4].index))
                dropped.add(entity)
            if dropped:
                drop_entity(batch, kind, dropped)
        return problems

    def _entity_file(self, kind: str, table: str, entry) -> str:
        raw, entity, exp_id, row, tree = entry
        if table == "assessments":
            return self._file("traces", entity, exp_id, table, row, tree)
        folder = self._folder(kind, entity, exp_id, tree)
        return str(folder / "meta.yaml") if table != "trace_info" else str(folder / "trace_info.yaml")

    # --- folding --------------------------------------------------------------------------

    def _folds(self, collation: str, values: set) -> dict:
        values.discard(None)
        folds, _ = self.folding.folds(collation, values)
        return folds

    def _folds_between(self, table: str, collation: str, values: list) -> dict:
        """Folded keys comparable with every key seen before: once a key needs the server's
        weights, so do all keys of the table, the ones seen before included."""
        folds, by_server = self.folding.folds(collation, set(values), table in self.by_server)
        if by_server and table not in self.by_server:
            self.by_server.add(table)
            old = list(self.seen[table].values())
            again, _ = self.folding.folds(collation, {e[0] for e in old}, True)
            self.seen[table] = {again[e[0]]: e for e in old}
        return folds



def _experiment_of(table: str, row, trace_experiments: dict):
    """The experiment (as its folder names it) of an entity's own row."""
    if table == "experiments":
        return row[0]
    if table == "runs":
        return row[-1]
    if table == "logged_models":
        return row[1]
    if table == "trace_info":
        return row["experiment_id"]
    if table == "assessments":
        return trace_experiments.get(row["trace_id"], row.get("experiment_id"))
    return None
