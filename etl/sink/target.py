"""What a kind of target database provides, and the choice of one by URI scheme.

The pipeline talks to a target only through these two shapes, so a new kind of database is one new
package beside ``sqlite/``, ``postgres/`` and ``mysql/`` (each with the same rooms: schema.py,
writer.py, staging.py), not an ``if`` in every function. This module imports none of them at
module level:

``Target``: the database a ``--target`` URI names (a SQLite file, a PostgreSQL schema, a MySQL
database).
    check_free()          refuse a target that holds data (before anything is created)
    expected_limits()     what its columns hold (etl.sql_limits), without staging anything:
                          for a dry run
    expected_folding()    how it compares the text of keys (etl.keys), None where byte by
                          byte: for a dry run
    staging(keep_failed)  a context manager: lock the target against other runs, remove what a
                          killed run left behind, yield a ``Staging``; on exit remove the
                          staging area unless it was promoted (or kept by --keep-failed)
    existing()            the locator of the target itself, for ``etl-migrate verify``
    counts(locator)       rows per migrated table of a database, for the summary
    display, server_uri   how the target is shown (never with a password)
    server_packages       what `mlflow server` needs beside MLflow to open server_uri
    max_experiment_id     the largest experiment id its schema can hold

``Staging``: where rows go before promotion.
    create_schema()       MLflow's own empty schema, at its alembic head
    column_limits()       what the staged schema's columns hold (etl.sql_limits.Limits)
    key_folding()         how the staged schema compares the text of keys (etl.keys): None
                          where byte by byte (SQLite, PostgreSQL), else a KeyFolding
    writer(batch_size)    the single writer: write(batch) / finish() / abort() /
                          delete_entities(ids) / prune_orphans(); and optionally ``spill``:
                          what producers use to hand it rows in scratch files instead of
                          batches (SQLite: etl.sink.sqlite.scratch)
    locator               what the verifier connects to (etl.verify.connect), read-only
    sync()                optional: write the staged database to disk ahead of promote(),
                          while verification reads it (SQLite: the file's fsync)
    promote(verified)     make the staged database the target, atomically, after re-checking
                          under lock that the target still holds no data
    kept                  how to name the staging area when --keep-failed kept it
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import tempfile
from pathlib import Path

from etl.errors import MigrationError, TargetError
from etl.observe import log
from etl.rows import COLUMNS

SQLITE_SCHEMES = ("sqlite",)
POSTGRES_SCHEMES = ("postgresql", "postgresql+psycopg", "postgres")
MYSQL_SCHEMES = ("mysql", "mysql+pymysql")


def scheme_of(uri: str) -> str:
    return uri.split("://", 1)[0].lower() if "://" in uri else ""


def open_target(uri: str):
    """The Target a --target URI names; a URI of no supported kind is a TargetError."""
    scheme = scheme_of(uri)
    if scheme in SQLITE_SCHEMES:
        from etl.sink.sqlite.staging import SqliteTarget

        return SqliteTarget(uri)
    if scheme in POSTGRES_SCHEMES:
        from etl.sink.postgres.staging import PostgresTarget

        return PostgresTarget(uri)
    if scheme in MYSQL_SCHEMES:
        from etl.sink.mysql.staging import MysqlTarget

        return MysqlTarget(uri)
    raise TargetError(
        f"target {redact(uri)!r} is not a supported database URI; use sqlite:///path/to/mlflow.db, "
        "postgresql://user@host:5432/database or mysql://user@host:3306/database"
    )


def redact(text: str) -> str:
    """A URI (or a message that holds one) fit to print: every password, in a URI's user part or
    a libpq ``password=`` parameter, replaced by ***."""
    text = re.sub(r"(password=)[^&\s]*", r"\1***", text, flags=re.IGNORECASE)
    return re.sub(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*):[^\s/]*@", r"\1:***@", text)


# What every database's package shares: MLflow's schema as its migrations make it, and the SQL
# the writers run on the staged tables (the same statements on every database).

# Tables MLflow's migrations fill themselves; the rest of an empty target holds no rows.
SCHEMA_SEED_TABLES = frozenset({"alembic_version", "workspaces"})


# What a user knows a database by, counted as MLflow's UI shows them (the Default experiment
# too; deleted ones apart): (table, where, one, many).
_SHOWN = (
    ("experiments", "lifecycle_stage = 'active'", "experiment", "experiments"),
    ("runs", "lifecycle_stage = 'active'", "run", "runs"),
    ("registered_models", None, "registered model", "registered models"),
    ("logged_models", None, "logged model", "logged models"),
    ("trace_info", None, "trace", "traces"),
    ("experiments", "lifecycle_stage = 'deleted'", "deleted experiment", "deleted experiments"),
    ("runs", "lifecycle_stage = 'deleted'", "deleted run", "deleted runs"),
)
# Samples of a filled target, to tell an earlier migration of the same tree: (column, table,
# condition); see sample_query.
SAMPLE_RUN_IDS = ("run_uuid", "runs", "TRUE")
SAMPLE_EXPERIMENT_NAMES = ("name", "experiments", "NOT (experiment_id = 0 AND name = 'Default')")


def sample_query(sample: tuple[str, str, str], qualified_table: str, size: int = 1000) -> str:
    column, _, condition = sample
    return f"SELECT {column} FROM {qualified_table} WHERE {condition} LIMIT {size}"


def shown_data(count, filled: dict[str, int]) -> str:
    """What a filled database holds, in MLflow's words: ``count(table, where)`` counts a table's
    rows (0 without the table), for the tables ``filled`` names (the Default experiment alone
    fills none). Rows only of other tables are named by table."""
    parts = [f"{n:,} {one if n == 1 else many}" for table, where, one, many in _SHOWN
             if table in filled and (n := count(table, where))]
    return ", ".join(parts) or ", ".join(f"{t}: {n:,} rows" for t, n in sorted(filled.items())[:5])


def cache_dir() -> Path:
    explicit = os.environ.get("ETL_MIGRATE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "etl-migrate"


def read_cached(path: Path, fmt: int):
    """What write_cached stored at path in format fmt, or None (no file, another format, damaged)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != fmt or data.get("schema") != path.stem:
        return None
    return data.get("content")


def write_cached(path: Path, fmt: int, content) -> None:
    """Written whole or not at all; a cache that cannot be written only costs later runs time."""
    data = {"format": fmt, "schema": path.stem, "content": content}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem[:20]}-", suffix=".json", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        log.debug("schema recording not cached", script=str(path), error=str(e))


def schema_key() -> str:
    """MLflow's version plus its migration file names: a new migration means a new template."""
    spec = importlib.util.find_spec("mlflow")
    assert spec is not None and spec.origin is not None
    versions = Path(spec.origin).parent / "store" / "db_migrations" / "versions"
    names = sorted(p.name for p in versions.glob("*.py"))
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:12]
    return f"mlflow-{importlib.metadata.version('mlflow')}-{digest}"


def schema_head() -> str:
    """The alembic revision of the installed MLflow's schema."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    return _get_latest_schema_revision()


def check_column_lists(staged_columns) -> None:
    """Every column we fill exists, and every column we do not fill can be left to its default.

    ``staged_columns(table)`` gives (name, not_null, has_default) for each column of a staged
    table, whatever the database. This is what keeps ``etl.rows.COLUMNS`` honest against the
    installed MLflow: a release that adds a required column, or drops one we fill, stops the run
    here with the table named.
    """
    for table, ours in COLUMNS.items():
        staged = staged_columns(table)
        if not staged:
            raise MigrationError(f"the installed MLflow's schema has no table {table!r}")
        names = {name for name, _, _ in staged}
        missing = [c for c in ours if c not in names]
        if missing:
            raise MigrationError(
                f"the installed MLflow's {table!r} table has no column(s) {missing}; "
                "this MLflow version is not supported"
            )
        unfilled = [
            name for name, not_null, has_default in staged
            if not_null and not has_default and name not in ours
        ]
        if unfilled:
            raise MigrationError(
                f"the installed MLflow's {table!r} table requires column(s) {unfilled} "
                "that etl-migrate does not fill; this MLflow version is not supported"
            )


# Columns that extractors fill when they can but that older MLflow schemas do not have; such a
# value is left out when the staged table lacks the column. Any other unknown column is an error.
OPTIONAL_COLUMNS = {
    "trace_info": frozenset({"trace_name"}),
    "assessments": frozenset({"experiment_id", "trace_timestamp_ms"}),
}

# Entity kind (as Problems and LoadStats.clashes name it) -> its table and key column.
ENTITY_KEYS = (("experiments", "experiments", "experiment_id"), ("runs", "runs", "run_uuid"),
               ("traces", "trace_info", "request_id"), ("logged_models", "logged_models", "model_id"),
               ("registered_models", "registered_models", "name"))
MISSING_DATASET_INPUTS = (
    "SELECT i.input_uuid, r.run_uuid, r.experiment_id FROM inputs i JOIN runs r "
    "ON r.run_uuid = i.destination_id WHERE i.source_type = 'DATASET' AND i.destination_type = 'RUN' "
    "AND i.source_id NOT IN (SELECT dataset_uuid FROM datasets) ORDER BY r.run_uuid, i.input_uuid"
)
MISSING_RUN_MODEL_METRICS = (
    "SELECT DISTINCT m.model_id, m.experiment_id, m.metric_name, m.run_id FROM logged_model_metrics m "
    "WHERE m.run_id NOT IN (SELECT run_uuid FROM runs) ORDER BY 1, 3, 4"
)

# Rows that refer to a run with no foreign key to say so: deleted, in this order, once the runs of
# entities left out (--skip-invalid) are gone.
UNKEYED_ORPHANS = (
    ("inputs", "DELETE FROM inputs WHERE (destination_type = 'RUN' AND destination_id NOT IN "
               "(SELECT run_uuid FROM runs)) OR (source_type IN ('RUN_INPUT', 'RUN_OUTPUT') "
               "AND source_id NOT IN (SELECT run_uuid FROM runs))"),
    ("input_tags", "DELETE FROM input_tags WHERE input_uuid NOT IN (SELECT input_uuid FROM inputs)"),
)


def first_of_each_key(table: str, rows: list[tuple], key: tuple[int, ...]) -> list[tuple]:
    """The first row of each primary key (``key``: where its columns sit in the rows), as MLflow's
    SQL store (and SQLite's INSERT OR IGNORE) keeps it. For the writers whose bulk load cannot
    skip a repeat (COPY, LOAD DATA); a work unit holds whole runs and whole logged models, so the
    repeats of a key are all in one batch."""
    if len(key) == len(COLUMNS[table]):
        return list(dict.fromkeys(rows))
    first: dict[tuple, tuple] = {}
    for row in rows:
        first.setdefault(tuple(row[i] for i in key), row)
    return list(first.values())


def dict_row_groups(table: str, rows: list[dict], staged: set[str]):
    """Rows of a table whose rows are dicts (etl.rows.DICT_TABLES), as (columns, tuples) per set
    of keys: a value for a column the staged table lacks is left out when OPTIONAL_COLUMNS says it
    may be (an older MLflow's schema), else it is an error."""
    groups: dict[tuple[str, ...], list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row), []).append(row)
    for keys, group in groups.items():
        unknown = [k for k in keys if k not in staged and k not in OPTIONAL_COLUMNS.get(table, ())]
        if unknown:
            raise MigrationError(f"the installed MLflow's {table!r} table has no column(s) {unknown}")
        kept = tuple(k for k in keys if k in staged)
        yield kept, [tuple(row[k] for k in kept) for row in group]


def hold_for_test(variable: str) -> None:
    """Tests only: while the environment names a file in ``variable`` and it does not exist, wait
    (a test changes something, or kills the run, at a known point)."""
    import time

    flag = os.environ.get(variable)
    while flag and not os.path.exists(flag):
        time.sleep(0.05)


def exclusive(method):
    """One call at a time on the connection; abort() waits for the call in flight to end."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return locked
