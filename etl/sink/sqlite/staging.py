"""The SQLite target: its lock, the staging file beside it, and a promotion that never clobbers.

Until promotion the target is never opened for writing: all rows go into a staging file in the
target's folder, and any failure removes it. A lock file beside the target keeps two runs
apart; a staging file left by a killed run is removed by the next run that takes the lock.

Promotion re-checks the target, because it may have changed during a run of hours:
- No target: the staging file gets the target's name through a hard link, which refuses to
  replace a file that appeared meanwhile (that file then takes the next path).
- A target file (empty, or only what MLflow puts in a new database): the staged database is
  copied INTO it with SQLite's online backup API, under SQLite's own write lock, so the
  processes that have it open (a running `mlflow server`) see the migrated data at their next
  query. A rename would leave them on the replaced file.
- A target that gained data, or is locked for too long: it is left as it was, and the staged
  database is kept beside it under a name the error gives.
"""

from __future__ import annotations

import contextlib
import glob
import os
import sqlite3
import time
from pathlib import Path

from filelock import FileLock, Timeout

from etl.errors import NotPromoted, TargetError, TargetHoldsData, VerificationFailed
from etl.observe import log
from etl.rows import TABLES
from etl.sink.sqlite.schema import create_schema, fsync_file, schema_limits, sqlite_limits
from etl.sink.sqlite.scratch import Spill
from etl.sink.sqlite.writer import StagingWriter
from etl.sink.target import (
    SAMPLE_EXPERIMENT_NAMES,
    SAMPLE_RUN_IDS,
    SCHEMA_SEED_TABLES,
    sample_query,
    schema_head,
    shown_data,
)

SQLITE_PREFIX = "sqlite:///"

# How long promotion waits for SQLite's write lock on the target; MLflow's own writers wait 20 s.
LOCK_WAIT_SECONDS = 30
# Re-checks after a write slipped in between the check and the copy (a server starting, say).
PROMOTE_ATTEMPTS = 5
# What `mlflow server` writes into a new database on start; a target holding only this is empty.
DEFAULT_EXPERIMENT = "experiment_id = 0 AND name = 'Default' AND lifecycle_stage = 'active'"


def target_path(uri: str) -> Path:
    """The database file a ``sqlite:///`` URI names (a symlink's destination); else TargetError."""
    if not uri.startswith(SQLITE_PREFIX):
        raise TargetError(
            f"target {uri!r} is not a SQLite URI; use sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db"
        )
    raw = uri[len(SQLITE_PREFIX) :]
    if not raw or raw == ":memory:" or "?" in raw:
        raise TargetError(f"target {uri!r} must name a database file (no :memory:, no ?query)")
    path = Path(raw).expanduser().absolute()
    if path.is_symlink():
        # Staging and promotion happen beside the file the link points to (a bigger disk,
        # say); a rename at the link's name would replace the link and leave that file empty.
        link, path = path, Path(os.path.realpath(path))
        if path.is_symlink():
            raise TargetError(f"target {link} is a symlink that never reaches a file (a loop)")
        log.info("target is a symlink; migrating into its destination", link=str(link), target=str(path))
    if not path.parent.is_dir():
        raise TargetError(f"target folder {path.parent} does not exist")
    if path.is_dir():
        raise TargetError(f"target {path} is a folder, not a database file")
    return path


def refuse_unless_empty(conn: sqlite3.Connection, path: Path) -> None:
    """TargetError unless the database holds nothing but what MLflow puts in a new one, with
    the installed MLflow's schema revision (we copy our schema, never convert another)."""
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    filled = {}
    for table in tables:
        if table in SCHEMA_SEED_TABLES or table.startswith("sqlite_"):
            continue
        where = f" WHERE NOT ({DEFAULT_EXPERIMENT})" if table == "experiments" else ""
        count = conn.execute(f'SELECT COUNT(*) FROM "{table}"{where}').fetchone()[0]
        if count:
            filled[table] = count
    if filled:
        def count(table: str, where: str | None) -> int:
            if table not in tables:
                return 0
            return conn.execute(f'SELECT COUNT(*) FROM "{table}"' + (f" WHERE {where}" if where else "")).fetchone()[0]

        def sample(what: tuple[str, str, str]) -> set:
            table = what[1]
            return {r[0] for r in conn.execute(sample_query(what, f'"{table}"'))} if table in tables else set()

        raise TargetHoldsData(str(path), shown_data(count, filled), sample(SAMPLE_RUN_IDS),
                              sample(SAMPLE_EXPERIMENT_NAMES))
    if "alembic_version" in tables:
        found = [r[0] for r in conn.execute("SELECT version_num FROM alembic_version")]
        head = schema_head()
        if found and found != [head]:
            import importlib.metadata

            raise TargetError(
                f"target {path} has an MLflow schema at revision {', '.join(found)}, but the "
                f"installed MLflow {importlib.metadata.version('mlflow')} writes revision {head}; "
                "it holds no data: stop what uses it and delete it, or choose another --target"
            )


def check_target_is_free(path: Path) -> None:
    """Refuse a target that holds anything: we fill empty databases, we never merge into them."""
    if not path.exists() or path.stat().st_size == 0:
        return
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            refuse_unless_empty(conn, path)
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise TargetError(f"target {path} exists and is not a usable SQLite database ({e})") from None


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


def fsync_folder(folder: Path) -> None:
    """Make a new name in folder durable. Windows cannot open a folder as a file, and NTFS
    journals names itself."""
    if os.name != "nt":
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_header(fd: int) -> bytes:
    """The database header: its change counter moves with every commit in rollback-journal mode."""
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 100)


class _TargetChanged(Exception):
    """A write reached the target between our check and the copy's own lock."""


class StagingArea:
    """Lock on the target, a staging path beside it, promotion or removal at the end."""

    def __init__(self, target: Path, keep_failed: bool = False):
        self.target = target
        self.keep_failed = keep_failed
        self.lock_path = target.with_name(f".{target.name}.etl-migrate.lock")
        self.staging = self.staging_for(target, os.getpid())
        self._lock = FileLock(self.lock_path, blocking=False)
        self.promoted = False
        self.kept: Path | None = None

    @staticmethod
    def staging_for(target: Path, pid) -> Path:
        return target.with_name(f".{target.name}.staging-{pid}")

    def __enter__(self) -> StagingArea:
        try:
            self._lock.acquire()
        except Timeout:
            raise TargetError(
                f"another etl-migrate is migrating into {self.target}; wait for it to finish"
            ) from None
        except PermissionError:
            raise TargetError(
                f"cannot write in {self.target.parent}, the folder of target {self.target}; "
                "etl-migrate builds the database beside the target"
            ) from None
        self._remove_stale_staging()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            # Each scratch file is deleted as it is merged: any left are of a load that stopped.
            self.discard_scratch()
            # Only a database that failed verification is worth keeping: it is complete, and
            # the report says where it differs. Anything else is a partial file.
            kept = self.keep_failed and exc_type is not None and issubclass(exc_type, VerificationFailed)
            if not self.promoted and not kept and self.kept is None:
                self.discard()
        finally:
            # filelock leaves the file for waiters to share; a waiter that locks the unlinked
            # file sees it has no name and starts again. (Windows refuses; filelock removes it.)
            with contextlib.suppress(OSError):
                self.lock_path.unlink()
            self._lock.release()

    def _remove_stale_staging(self) -> None:
        # We hold the lock, so no live run owns any staging file of this target. One killed
        # between its link and its unlink left a second name of the target: removing it is safe.
        prefix = f".{self.target.name}.staging-"
        for entry in os.scandir(self.target.parent):
            if entry.name.startswith(prefix):
                os.unlink(entry.path)

    def discard(self) -> None:
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(f"{self.staging}{suffix}").unlink(missing_ok=True)

    def scratch_prefix(self) -> str:
        """Where producers write scratch files (etl.sink.sqlite.scratch): beside the staging
        file and named after it, so they go wherever a staging file of this run goes."""
        return f"{self.staging}.scratch-"

    def discard_scratch(self) -> None:
        # The load's worker processes are gone by now (a cancelled one is killed and waited
        # for), so no file appears after this.
        for path in glob.glob(glob.escape(self.scratch_prefix()) + "*"):
            Path(path).unlink(missing_ok=True)

    def promote(self, verified: bool = True) -> None:
        """Put the staged database at the target, or keep it beside an untouchable target."""
        fsync_file(self.staging)
        created = False
        try:
            linked, created = self._link_as_target()
            if not linked:
                self._copy_into_target()
        except (TargetError, sqlite3.Error, OSError) as e:
            if created:
                with contextlib.suppress(OSError):
                    if self.target.stat().st_size == 0:
                        self.target.unlink()
            self.kept = self._keep_aside()
            if isinstance(e, TargetHoldsData):
                e = TargetError(f"target {self.target} gained data during the run ({e.shown})")
            raise NotPromoted(e, self.target, self.kept, verified) from None
        self.promoted = True
        if linked:
            self._drop_staging_name()
        else:
            self.discard()

    def _link_as_target(self) -> tuple[bool, bool]:
        """Give the staging file the target's name unless that name exists (a link never
        replaces). Returns (linked, created an empty target to fill instead)."""
        try:
            os.link(self.staging, self.target)
        except FileExistsError:
            return False, False
        except OSError:
            # No hard links here (FAT, some network shares): claim the name with an exclusive
            # create, then fill that empty database as any existing target.
            try:
                os.close(os.open(self.target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            except FileExistsError:
                return False, False
            return False, True
        return True, False

    def _drop_staging_name(self) -> None:
        try:
            self.staging.unlink()
        except OSError as e:
            # The target is in place; the extra name goes with the next run on this target.
            log.warning("could not remove the staging name of the promoted target", path=str(self.staging), error=str(e))
        fsync_folder(self.target.parent)

    def _copy_into_target(self) -> None:
        # Our own descriptor, to read the target's header. Closing any descriptor of a file
        # drops every POSIX lock this process holds on it, SQLite's included: so it is opened
        # before SQLite locks the target and closed after SQLite has let go.
        fd = os.open(self.target, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            source = sqlite3.connect(f"file:{self.staging}?mode=ro", uri=True)
            # The copy goes one page per step (see _backup); without this, every step would take
            # and drop the staging file's read lock and page cache: 2.5x slower.
            source.execute("PRAGMA locking_mode=EXCLUSIVE")
            try:
                for _ in range(PROMOTE_ATTEMPTS):
                    try:
                        self._backup(source, fd, self._check_under_write_lock(fd))
                        return
                    except _TargetChanged:
                        log.info("the target changed during promotion; checking it again", target=str(self.target))
            finally:
                source.close()
        finally:
            os.close(fd)
        raise TargetError(f"target {self.target} kept changing while etl-migrate promoted into it")

    def _check_under_write_lock(self, fd: int) -> bytes:
        """Check the target while holding its write lock; return its header as it was then."""
        conn = sqlite3.connect(self.target, timeout=LOCK_WAIT_SECONDS, isolation_level=None)
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as e:
                raise TargetError(f"target {self.target} stayed locked by another process "
                                  f"for {LOCK_WAIT_SECONDS}s ({e})") from None
            try:
                refuse_unless_empty(conn, self.target)
                return read_header(fd)
            finally:
                conn.execute("ROLLBACK")
        except sqlite3.DatabaseError as e:
            raise TargetError(f"target {self.target} is not a usable SQLite database ({e})") from None
        finally:
            conn.close()

    def _backup(self, source: sqlite3.Connection, fd: int, checked: bytes) -> None:
        """Copy the staged database into the target through SQLite's pager and journal.

        The backup cannot start inside our checking transaction (SQLite refuses a destination in
        a transaction), so a write may slip in between. The backup takes the target's write lock
        at its first step, before any page reaches the file; the guard then proves the target is
        still as checked: the same header (rollback journal), or checked again (WAL, where
        readers are not blocked and the header does not count commits). Raising from the guard
        rolls the backup back.
        """
        wal = len(checked) > 18 and checked[18] == 2
        started = False

        def guard(status: int, remaining: int, total: int) -> None:
            nonlocal started
            if status not in (sqlite3.SQLITE_OK, sqlite3.SQLITE_DONE):
                # SQLite waited LOCK_WAIT_SECONDS in its busy handler before saying so.
                raise TargetError(f"target {self.target} stayed locked by another process "
                                  f"for {LOCK_WAIT_SECONDS}s")
            if started:
                return
            started = True
            if wal:
                conn = sqlite3.connect(f"file:{self.target}?mode=ro", uri=True)
                try:
                    refuse_unless_empty(conn, self.target)
                finally:
                    conn.close()
            elif read_header(fd) != checked:
                raise _TargetChanged()

        target = sqlite3.connect(self.target, timeout=LOCK_WAIT_SECONDS)
        try:
            # One page per step: the first step must leave the copy unfinished so the guard runs
            # before the commit (a database has more than one page).
            source.backup(target, pages=1, progress=guard)
        finally:
            target.close()

    def _keep_aside(self) -> Path:
        """Give the staged database a name beside the target that no run removes."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        kept = self.target.with_name(f"{self.target.name}.etl-migrated-{stamp}.db")
        try:
            os.rename(self.staging, kept)
        except OSError as e:
            log.warning("could not rename the staging database; it stays where it is", path=str(self.staging), error=str(e))
            return self.staging
        return kept


# SQLite's INTEGER is 64-bit: every id a FileStore holds fits (larger ones are invalid input).
SQLITE_MAX_INTEGER = 2**63 - 1


class SqliteTarget:
    max_experiment_id = SQLITE_MAX_INTEGER
    server_packages: tuple[str, ...] = ()  # MLflow opens SQLite with Python's own sqlite3

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

    @staticmethod
    def expected_folding() -> None:
        """Keys compare byte by byte here (see etl.keys)."""
        return None

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

    @staticmethod
    def key_folding() -> None:
        """Keys compare byte by byte here (see etl.keys)."""
        return None

    def writer(self, batch_size: int) -> StagingWriter:
        return StagingWriter(self.area.staging, batch_size, Spill(self.area.scratch_prefix()))

    def sync(self) -> None:
        fsync_file(self.area.staging)

    def promote(self, verified: bool = True) -> None:
        self.area.promote(verified)
