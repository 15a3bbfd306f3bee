"""The SQLite target: a database file, staged in a file beside it and renamed over it.

The work is done by staging.py (lock, staging path, promotion), schema.py (MLflow's schema) and
writer.py (the single writer); this module gives them the shape of ``etl.sink.target``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from etl.errors import TargetError
from etl.rows import TABLES
from etl.sink.schema import create_schema, schema_limits, sqlite_limits
from etl.sink.staging import StagingArea, check_is_mlflow_database, check_target_is_free, target_path
from etl.sink.writer import StagingWriter

# SQLite's INTEGER is 64-bit: every id a FileStore holds fits (larger ones are invalid input).
SQLITE_MAX_INTEGER = 2**63 - 1


class SqliteTarget:
    max_experiment_id = SQLITE_MAX_INTEGER

    def __init__(self, uri: str):
        self.path: Path = target_path(uri)
        self.display = str(self.path)
        self.server_uri = f"sqlite:///{self.path}"

    def check_free(self) -> None:
        check_target_is_free(self.path)

    @staticmethod
    def expected_limits():
        """The limits of the schema a run would stage (for a dry run, which stages nothing)."""
        return schema_limits()

    def staging(self, keep_failed: bool = False) -> SqliteStaging:
        return SqliteStaging(self, keep_failed)

    def staging_glob(self) -> str:
        """Prefix of this run's staging files, for the last-resort cleanup after a signal."""
        return str(StagingArea.staging_for(self.path, ""))

    def existing(self) -> str:
        if not self.path.is_file():
            raise TargetError(f"target database {self.path} does not exist")
        check_is_mlflow_database(self.path)
        return str(self.path)

    @staticmethod
    def counts(locator: str) -> dict[str, int]:
        """Rows per migrated table in a database, read back after the run."""
        conn = sqlite3.connect(f"file:{locator}?mode=ro", uri=True)
        try:
            present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            return {t: conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in TABLES if t in present}
        finally:
            conn.close()


class SqliteStaging:
    def __init__(self, target: SqliteTarget, keep_failed: bool):
        self.area = StagingArea(target.path, keep_failed=keep_failed)
        self.locator = str(self.area.staging)
        self.kept = self.area.staging

    def __enter__(self) -> SqliteStaging:
        self.area.__enter__()
        check_target_is_free(self.area.target)  # again, now that we hold the lock
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.area.__exit__(exc_type, exc, tb)

    def create_schema(self) -> None:
        create_schema(self.area.staging)

    def column_limits(self):
        return sqlite_limits(self.area.staging)

    def writer(self, batch_size: int) -> StagingWriter:
        return StagingWriter(self.area.staging, batch_size)

    def promote(self, verified: bool = True) -> None:
        self.area.promote(verified)
