"""Failure paths of the foundation: bad targets, bad input, kill -9, a second run at once.

Each test runs the real CLI in a subprocess and checks the error names the file and the reason,
the target is untouched, and no staging file is left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from etl.pipeline import HOLD_BEFORE_PROMOTION
from tests.client_compare import compare_runs
from tests.conftest import posix_only, run_cli, tree_fingerprint
from tests.trees import build_core_tree, file_client, sql_client


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    mlruns = tmp_path_factory.mktemp("faults") / "mlruns"
    return mlruns, build_core_tree(mlruns)


@pytest.fixture
def tree(built) -> Path:
    return built[0]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".staging-" in p.name or p.name.endswith(".lock"))


@pytest.mark.parametrize(
    "target, message",
    [
        ("mssql://localhost/db", "is not a supported database URI"),
        ("sqlite:///{tmp}/no/such/folder/mlflow.db", "does not exist"),
        ("sqlite:///:memory:", "must name a database file"),
    ],
)
def test_bad_target_is_refused(tree, tmp_path, target, message):
    result = run_cli("--source", str(tree), "--target", target.format(tmp=tmp_path))
    assert result.returncode == 2
    assert message in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_target_holding_data_is_refused_and_untouched(tree, tmp_path):
    """The refusal names what the database holds as MLflow shows it; a database made from this
    very tree gets the command that checks it, which runs as printed."""
    import shlex

    from mlflow.entities import ViewType

    db = tmp_path / "mlflow.db"
    first = run_cli("--source", str(tree), "--target", f"sqlite:///{db}", "--no-verify")
    assert first.returncode == 0, first.stderr
    before = db.read_bytes()
    second = run_cli("--source", str(tree), "--target", f"sqlite:///{db}")
    assert second.returncode == 2
    client = sql_client(db)
    experiments = client.search_experiments()  # active ones, the Default experiment included
    gone = client.search_experiments(view_type=ViewType.DELETED_ONLY)
    runs = client.search_runs([e.experiment_id for e in experiments])
    models = client.search_registered_models()
    assert (f"error: target {db} already holds MLflow data ({len(experiments)} experiments, {len(runs)} "
            f"runs, {len(models)} registered models, {len(gone)} deleted experiment, ") in second.stderr
    hint = second.stderr.split("`")[1]
    assert hint == f"etl-migrate verify --source {tree} --target sqlite:///{db}"
    checked = run_cli(*shlex.split(hint)[1:])
    assert checked.returncode == 0 and "Status: SUCCESS" in checked.stdout, checked.stderr
    assert db.read_bytes() == before
    assert leftovers(tmp_path) == []

    other = tmp_path / "other" / "mlruns"
    build_core_tree(other)  # the same kind of tree, other runs: no earlier migration of it
    third = run_cli("--source", str(other), "--target", f"sqlite:///{db}")
    assert third.returncode == 2 and "already holds MLflow data" in third.stderr
    assert "etl-migrate verify" not in third.stderr and "Move it away or choose another --target." in third.stderr


def test_target_that_is_not_sqlite_is_refused(tree, tmp_path):
    db = tmp_path / "notes.db"
    db.write_text("my notes, not a database\n" * 100)
    result = run_cli("--source", str(tree), "--target", f"sqlite:///{db}")
    assert result.returncode == 2
    assert "not a usable SQLite database" in result.stderr
    assert db.read_text().startswith("my notes")


def test_source_that_is_not_a_tree_is_refused(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "readme.txt").write_text("hello")
    result = run_cli("--source", str(tmp_path / "src"), "--target", f"sqlite:///{tmp_path}/m.db")
    assert result.returncode == 2
    assert "not an MLflow FileStore tree" in result.stderr


def test_invalid_input_lists_every_file_and_writes_nothing(built, tmp_path):
    import shutil

    tree, ids = built
    bad = tmp_path / "mlruns"
    shutil.copytree(tree, bad, symlinks=True)
    broken_meta = next(bad.glob(f"*/{ids['failed_run']}")) / "meta.yaml"
    broken_meta.write_text("run_id: [unclosed\n")
    metric_file = next(bad.glob(f"*/{ids['full_run']}")) / "metrics" / "loss"
    metric_file.write_text("123 not-a-number 0\n")
    before = tree_fingerprint(bad)
    db = tmp_path / "mlflow.db"

    result = run_cli("--source", str(bad), "--target", f"sqlite:///{db}")

    assert result.returncode == 3, result.stderr
    assert "2 problem(s)" in result.stderr
    assert f"{broken_meta}:2: malformed YAML" in result.stderr
    assert f"{metric_file}:1: metric line is not 'timestamp value [step]'" in result.stderr
    assert not db.exists()
    assert leftovers(tmp_path) == []
    assert tree_fingerprint(bad) == before


def _start(tree: Path, db: Path, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "etl", "--source", str(tree), "--target", f"sqlite:///{db}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kwargs,
    )


def _wait_for_staging(folder: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(".staging-" in p.name for p in folder.iterdir()):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("no staging file appeared")


@posix_only("the CLI's process group killed with os.killpg")
def test_kill_9_midway_leaves_no_target_and_next_run_cleans_up(tree, tmp_path):
    db = tmp_path / "mlflow.db"
    # Held before promotion (a flag file that never appears): this small tree's whole run can
    # end within the wait below, and the kill must land in it.
    proc = _start(tree, db, env={**os.environ, HOLD_BEFORE_PROMOTION: str(tmp_path / "never")})
    _wait_for_staging(tmp_path, proc)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole group: the CLI and its worker processes
    proc.wait()
    proc.communicate()
    assert not db.exists()
    assert any(".staging-" in name for name in leftovers(tmp_path))
    # A worker killed while it wrote a scratch file leaves it too (named after the run's
    # staging file, as etl.sink.sqlite.scratch names them): the next run removes it as well.
    (tmp_path / f".mlflow.db.staging-{proc.pid}.scratch-{proc.pid + 1}-0.db").write_bytes(b"partial")

    again = run_cli("--source", str(tree), "--target", f"sqlite:///{db}")
    assert again.returncode == 0, again.stderr
    assert leftovers(tmp_path) == []
    assert compare_runs(file_client(tree), sql_client(db)) == 7


def test_second_run_on_same_target_is_refused(tree, tmp_path):
    db = tmp_path / "mlflow.db"
    release = tmp_path / "release"  # the first run holds before promotion until this exists
    first = _start(tree, db, env={**os.environ, HOLD_BEFORE_PROMOTION: str(release)})
    try:
        _wait_for_staging(tmp_path, first)
        second = run_cli("--source", str(tree), "--target", f"sqlite:///{db}")
        assert second.returncode == 2
        assert "another etl-migrate" in second.stderr and str(db) in second.stderr
    finally:
        release.touch()
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert db.exists()
