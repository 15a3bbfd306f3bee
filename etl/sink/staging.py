"""The target file, its lock, the staging file beside it, and the atomic promotion.

Until ``promote`` the target path is never opened for writing: all rows go into a staging file
in the same folder (so the final ``os.replace`` is a rename on one filesystem, atomic), and any
failure removes the staging file. A lock file beside the target keeps two runs apart; a staging
file left by a killed run is removed by the next run that takes the lock.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from pathlib import Path

from etl.errors import TargetError, VerificationFailed
from etl.sink.schema import SCHEMA_SEED_TABLES

SQLITE_PREFIX = "sqlite:///"


def target_path(uri: str) -> Path:
    """The database file a ``sqlite:///`` URI names; anything else is a TargetError."""
    if not uri.startswith(SQLITE_PREFIX):
        raise TargetError(
            f"target {uri!r} is not a SQLite URI; use sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db"
        )
    raw = uri[len(SQLITE_PREFIX) :]
    if not raw or raw == ":memory:" or "?" in raw:
        raise TargetError(f"target {uri!r} must name a database file (no :memory:, no ?query)")
    path = Path(raw).expanduser().absolute()
    if not path.parent.is_dir():
        raise TargetError(f"target folder {path.parent} does not exist")
    if path.is_dir():
        raise TargetError(f"target {path} is a folder, not a database file")
    return path


def check_target_is_free(path: Path) -> None:
    """Refuse a target that holds anything: we replace files, we never merge into them."""
    if not path.exists() or path.stat().st_size == 0:
        return
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            filled = {}
            for table in tables:
                if table in SCHEMA_SEED_TABLES or table.startswith("sqlite_"):
                    continue
                count = conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
                if count:
                    filled[table] = count
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise TargetError(f"target {path} exists and is not a usable SQLite database ({e})") from None
    if filled:
        shown = ", ".join(f"{t}: {n} rows" for t, n in sorted(filled.items())[:5])
        raise TargetError(
            f"target {path} already holds data ({shown}); etl-migrate never merges into or "
            "overwrites a database with data. Move it away or choose another --target."
        )


def check_is_mlflow_database(path: Path) -> None:
    """A database to verify must be SQLite with MLflow's tables in it."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise TargetError(f"target {path} is not a usable SQLite database ({e})") from None
    missing = {"alembic_version", "experiments", "runs"} - tables
    if missing:
        raise TargetError(f"target {path} is not an MLflow database (no {', '.join(sorted(missing))} table)")


class StagingArea:
    """Lock on the target, a staging path beside it, promotion or removal at the end."""

    def __init__(self, target: Path, keep_failed: bool = False):
        self.target = target
        self.keep_failed = keep_failed
        self.lock_path = target.with_name(f".{target.name}.etl-migrate.lock")
        self.staging = self.staging_for(target, os.getpid())
        self._lock_fd: int | None = None
        self.promoted = False

    @staticmethod
    def staging_for(target: Path, pid) -> Path:
        return target.with_name(f".{target.name}.staging-{pid}")

    def __enter__(self) -> StagingArea:
        self._acquire_lock()
        self._remove_stale_staging()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            # Only a database that failed verification is worth keeping: it is complete, and
            # the report says where it differs. Anything else is a partial file.
            kept = self.keep_failed and exc_type is not None and issubclass(exc_type, VerificationFailed)
            if not self.promoted and not kept:
                self.discard()
        finally:
            self._release_lock()

    def _acquire_lock(self) -> None:
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder = self._lock_holder()
                raise TargetError(
                    f"another etl-migrate{holder} is migrating into {self.target}; "
                    "wait for it to finish"
                ) from None
            # The previous holder unlinks the lock file before releasing it; if we locked that
            # unlinked file, the path now names another one and we must lock that instead.
            try:
                same = os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode())
                self._lock_fd = fd
                return
            os.close(fd)

    def _lock_holder(self) -> str:
        try:
            pid = self.lock_path.read_text().strip()
        except OSError:
            return ""
        return f" (pid {pid})" if pid.isdigit() else ""

    def _release_lock(self) -> None:
        if self._lock_fd is None:
            return
        try:
            self.lock_path.unlink(missing_ok=True)
        finally:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _remove_stale_staging(self) -> None:
        # We hold the lock, so no live run owns any staging file of this target.
        prefix = f".{self.target.name}.staging-"
        for entry in os.scandir(self.target.parent):
            if entry.name.startswith(prefix):
                os.unlink(entry.path)

    def discard(self) -> None:
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(f"{self.staging}{suffix}").unlink(missing_ok=True)

    def promote(self) -> None:
        """fsync the staging file, rename it over the target, fsync the folder."""
        fd = os.open(self.staging, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self.staging, self.target)
        self.promoted = True
        dir_fd = os.open(self.target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
