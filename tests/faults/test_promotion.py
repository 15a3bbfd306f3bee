"""Promotion never clobbers: a target that changes during a run (a writer, a live `mlflow server`),
symlinked targets, kept permissions.

The CLI runs as a user runs it; ETL_MIGRATE_TEST_HOLD_BEFORE_PROMOTION holds it just before
promotion until a file exists, so each test changes the target at a known point of the run.
Where a test compares the result through MLflow's client itself, the run skips its own
verification (--no-verify) to keep the suite short.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from etl.errors import NotPromoted
from etl.sink.sqlite import staging as staging_module
from etl.sink.sqlite.schema import create_schema
from etl.errors import TargetHoldsData
from etl.sink.sqlite.staging import StagingArea, _TargetChanged
from tests import mlflow_server
from tests.client_compare import compare_experiments, compare_runs
from tests.conftest import posix_only, run_cli
from tests.trees import build_core_tree, file_client, sql_client

HOLD = "ETL_MIGRATE_TEST_HOLD_BEFORE_PROMOTION"
KEPT = re.compile(r"is kept at (\S+\.etl-migrated-\d{8}T\d{6}\.db)")
RUNS = 7  # in build_core_tree


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    mlruns = tmp_path_factory.mktemp("promotion") / "mlruns"
    build_core_tree(mlruns)
    return mlruns


@pytest.fixture(scope="module")
def new_mlflow_db(tmp_path_factory) -> Path:
    """A database exactly as MLflow leaves a new one: its schema and the Default experiment."""
    db = tmp_path_factory.mktemp("new-mlflow-db") / "mlflow.db"
    assert [e.name for e in sql_client(db).search_experiments()] == ["Default"]
    return db


@pytest.fixture
def initialized(new_mlflow_db):
    """Copies of it (MLflow's ~70 migrations take long on busy cores), in either journal mode."""

    def make(db: Path, journal_mode: str = "delete") -> Path:
        shutil.copyfile(new_mlflow_db, db)
        conn = sqlite3.connect(db)
        try:
            conn.execute(f"PRAGMA journal_mode={journal_mode}")
        finally:
            conn.close()
        return db

    return make


def write_row(db: Path) -> None:
    """Someone else's write, from a process of its own."""
    script = (
        "import sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1])\n"
        "conn.execute(\"INSERT INTO experiments (name, lifecycle_stage) VALUES ('written meanwhile', 'active')\")\n"
        "conn.commit()\n"
    )
    subprocess.run([sys.executable, "-c", script, str(db)], check=True, timeout=60)


def experiment_names(db: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return sorted(r[0] for r in conn.execute("SELECT name FROM experiments"))
    finally:
        conn.close()


def start_held(tree: Path, target: str, flag: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "etl", "--source", str(tree), "--target", target, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, HOLD: str(flag)},
    )


def wait_for_staging(folder: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """The run has checked the target and holds its lock once its staging file exists."""
    deadline = time.monotonic() + timeout
    while not any(".staging-" in p.name for p in folder.iterdir()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no staging file appeared"
        time.sleep(0.05)


def release(proc: subprocess.Popen, flag: Path) -> tuple[str, str]:
    flag.touch()
    return proc.communicate(timeout=600)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".staging-" in p.name or p.name.endswith(".lock"))


def assert_kept_and_verified(err: str, tree: Path, folder: Path) -> Path:
    match = KEPT.search(err)
    assert match, err
    kept = Path(match.group(1))
    assert kept.parent == folder and kept.is_file()
    assert compare_runs(file_client(tree), sql_client(kept)) == RUNS
    return kept


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_a_row_written_into_the_target_mid_run_is_never_overwritten(initialized, tree, tmp_path, journal_mode):
    db = initialized(tmp_path / "mlflow.db", journal_mode)
    flag = tmp_path / "go"
    proc = start_held(tree, f"sqlite:///{db}", flag)
    wait_for_staging(tmp_path, proc)
    write_row(db)
    out, err = release(proc, flag)

    assert proc.returncode == 2, out + err
    # As MLflow shows it: the Default experiment and the one written meanwhile.
    assert f"target {db} gained data during the run (2 experiments); it was not touched" in err
    assert experiment_names(db) == ["Default", "written meanwhile"]
    assert_kept_and_verified(err, tree, tmp_path)
    assert leftovers(tmp_path) == []


def test_a_target_created_with_data_mid_run_is_never_replaced(tree, tmp_path):
    db = tmp_path / "mlflow.db"
    flag = tmp_path / "go"
    proc = start_held(tree, f"sqlite:///{db}", flag)
    wait_for_staging(tmp_path, proc)
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE notes (line TEXT)")
    conn.execute("INSERT INTO notes VALUES ('mine')")
    conn.commit()
    conn.close()
    out, err = release(proc, flag)

    assert proc.returncode == 2, out + err
    assert f"target {db} gained data during the run (notes: 1 rows)" in err
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT line FROM notes").fetchall() == [("mine",)]
    conn.close()
    assert_kept_and_verified(err, tree, tmp_path)
    assert leftovers(tmp_path) == []


@posix_only("the server's process group, stopped with os.killpg")
def test_a_server_started_on_the_target_mid_run_serves_the_migrated_data(tree, tmp_path, monkeypatch):
    """`mlflow server` started early creates the target (schema, Default experiment) and keeps
    it open; the run must land in that very file, where the server reads and writes."""
    from mlflow import MlflowClient

    # Bounded REST calls: MLflow's defaults would let a hung server stall the suite for minutes.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")

    db = tmp_path / "mlflow.db"
    flag = tmp_path / "go"
    proc = start_held(tree, f"sqlite:///{db}", flag)
    wait_for_staging(tmp_path, proc)
    server, url, log = mlflow_server.start(db, tmp_path)
    try:
        inode = db.stat().st_ino
        out, err = release(proc, flag)
        assert proc.returncode == 0, out + err
        assert db.stat().st_ino == inode  # filled in place, never replaced

        rest = MlflowClient(tracking_uri=url)
        # Every experiment of the tree, field by field, over REST (not just the server's Default).
        assert compare_experiments(file_client(tree), rest) > 1
        exp_id = rest.get_experiment_by_name("Default").experiment_id
        run = rest.create_run(exp_id)
        rest.log_param(run.info.run_id, "after", "migration")
    finally:
        mlflow_server.stop(server)
    on_disk = sql_client(db)
    assert on_disk.get_run(run.info.run_id).data.params == {"after": "migration"}
    assert leftovers(tmp_path) == []


def test_a_database_mlflow_initialized_counts_as_empty(initialized, tree, tmp_path):
    db = initialized(tmp_path / "mlflow.db")
    result = run_cli("--source", str(tree), "--target", f"sqlite:///{db}", "--no-verify")
    assert result.returncode == 0, result.stderr
    assert compare_runs(file_client(tree), sql_client(db)) == RUNS


def test_a_target_of_another_mlflow_schema_revision_is_refused(initialized, tree, tmp_path):
    db = initialized(tmp_path / "mlflow.db")
    conn = sqlite3.connect(db)
    (head,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    conn.execute("UPDATE alembic_version SET version_num = '0584bdc529eb'")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    result = run_cli("--source", str(tree), "--target", f"sqlite:///{db}")
    assert result.returncode == 2, result.stderr
    assert "schema at revision 0584bdc529eb, but the installed MLflow" in result.stderr
    assert f"writes revision {head}" in result.stderr
    assert db.read_bytes() == before


def _staged_area(db: Path) -> StagingArea:
    area = StagingArea(db).__enter__()
    create_schema(area.staging)
    return area


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_a_write_between_the_check_and_the_copy_is_caught(initialized, tmp_path, journal_mode):
    """The copy cannot start inside the checking transaction; a write that lands in between is
    seen by the copy's guard, under the copy's own lock, and the copy rolls back."""
    db = initialized(tmp_path / "mlflow.db", journal_mode)
    area = _staged_area(db)
    fd = os.open(db, os.O_RDONLY)
    source = sqlite3.connect(f"file:{area.staging}?mode=ro", uri=True)
    try:
        checked = area._check_under_write_lock(fd)
        write_row(db)
        # Rollback journal: the header's change counter moved. WAL: the guard checks again.
        expected = _TargetChanged if journal_mode == "delete" else TargetHoldsData
        with pytest.raises(expected):
            area._backup(source, fd, checked)
    finally:
        source.close()
        os.close(fd)
        area.__exit__(None, None, None)
    assert experiment_names(db) == ["Default", "written meanwhile"]


def test_a_target_locked_for_too_long_keeps_the_database(initialized, tmp_path, monkeypatch):
    db = initialized(tmp_path / "mlflow.db")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time\n"
         "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "conn.execute('BEGIN IMMEDIATE')\nprint('locked', flush=True)\ntime.sleep(600)\n", str(db)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        monkeypatch.setattr(staging_module, "LOCK_WAIT_SECONDS", 1)
        area = _staged_area(db)
        try:
            with pytest.raises(NotPromoted) as caught:
                area.promote(verified=True)
        finally:
            area.__exit__(None, None, None)
    finally:
        holder.kill()
        holder.wait()
    assert caught.value.exit_code == 2
    assert "stayed locked by another process" in str(caught.value)
    assert caught.value.kept.is_file() and str(caught.value.kept) in str(caught.value)
    assert experiment_names(db) == ["Default"]


@posix_only("symlinks without Windows' developer mode")
def test_a_dangling_symlink_target_gets_its_destination_created(tree, tmp_path):
    disk = tmp_path / "bigdisk"
    disk.mkdir()
    here = tmp_path / "project"
    here.mkdir()
    link = here / "mlflow.db"
    link.symlink_to(disk / "mlflow.db")
    result = run_cli("--source", str(tree), "--target", f"sqlite:///{link}", "--no-verify")
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and (disk / "mlflow.db").is_file()
    assert compare_runs(file_client(tree), sql_client(link)) == RUNS
    assert sorted(p.name for p in here.iterdir()) == ["mlflow.db"]
    assert sorted(p.name for p in disk.iterdir()) == ["mlflow.db"]


@posix_only("POSIX mode bits and groups")
def test_a_symlinked_existing_target_keeps_link_file_mode_and_group(initialized, tree, tmp_path):
    disk = tmp_path / "bigdisk"
    disk.mkdir()
    real = initialized(disk / "mlflow.db")
    os.chmod(real, 0o640)
    group = 1 if os.geteuid() == 0 else os.getgroups()[-1]  # not root's own group 0
    os.chown(real, -1, group)
    before = real.stat()
    link = tmp_path / "link.db"
    link.symlink_to(real)

    result = run_cli("--source", str(tree), "--target", f"sqlite:///{link}", "--no-verify")

    assert result.returncode == 0, result.stderr
    after = real.stat()
    assert link.is_symlink()
    assert (after.st_ino, stat.S_IMODE(after.st_mode), after.st_gid) == (before.st_ino, 0o640, group)
    assert compare_runs(file_client(tree), sql_client(real)) == RUNS


@posix_only("umask set in preexec_fn")
def test_a_new_target_gets_the_usual_umask_mode(tree, tmp_path):
    db = tmp_path / "mlflow.db"
    result = run_cli("--source", str(tree), "--target", f"sqlite:///{db}", "--no-verify",
                     preexec_fn=lambda: os.umask(0o027))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(db.stat().st_mode) == 0o640


@posix_only("a folder made unwritable with chmod")
def test_a_symlink_into_a_folder_we_cannot_write_is_refused(tree, tmp_path):
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    link = tmp_path / "mlflow.db"
    link.symlink_to(readonly / "mlflow.db")
    prefix = []
    if os.geteuid() == 0:
        # root writes anywhere; without CAP_DAC_OVERRIDE it meets the folder's mode as a user does.
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and setpriv (util-linux) is not installed")
        prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search",
                  "--inh-caps=-dac_override,-dac_read_search"]
    result = subprocess.run(
        [*prefix, sys.executable, "-m", "etl", "--source", str(tree), "--target", f"sqlite:///{link}"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 2, result.stderr
    assert f"cannot write in {readonly}, the folder of target {readonly / 'mlflow.db'}" in result.stderr
    assert list(readonly.iterdir()) == []
    assert link.is_symlink()
