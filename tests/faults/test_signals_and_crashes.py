"""The worst day: kill -9 at many points, Ctrl-C, SIGTERM, a full disk, a file that would hang.

Every test runs the real CLI in a subprocess. The invariant each one checks: the target is
either absent (untouched) or complete and verified, and no staging file outlives a run that
could clean it up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from etl.pipeline import SMALL_TREE_FOLDERS
from tests.conftest import REPO, posix_only, run_cli, tree_fingerprint

# Finding a CLI's worker processes: pgrep exists on Linux and macOS alike (ps --ppid does not).
FIND_CHILDREN = "child processes found with pgrep -P"


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A synthetic tree big enough that a run lasts a few seconds (load, then verification),
    and parsed in worker processes (more folders than a small tree)."""
    assert 120 > SMALL_TREE_FOLDERS
    mlruns = tmp_path_factory.mktemp("crash") / "mlruns"
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_large_tree.py"), "--output", str(mlruns),
         "--shape", "metric-heavy", "--runs", "120", "--registered-models", "1"],
        check=True, capture_output=True, timeout=300,
    )
    return mlruns


def start(tree: Path, db: Path, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "etl", "--source", str(tree), "--target", f"sqlite:///{db}", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs,
    )


def staging_files(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".staging-" in p.name]


def children(pid: int) -> list[int]:
    # Exit status 1 means none: not an error here.
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout
    return [int(p) for p in out.split()]


def wait_for_children_to_exit(pid: int, timeout: float = 10) -> None:
    """Worker processes of a dead CLI see their pipe close and exit; none may linger."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = children(pid)
        if not left:
            return
        time.sleep(0.1)
    raise AssertionError(f"processes of pid {pid} still running: {left}")


@posix_only(FIND_CHILDREN)
def test_kill_9_at_many_points_never_leaves_a_partial_target(tree, tmp_path):
    before = tree_fingerprint(tree)
    outcomes = []
    # From the first instant to past the end: discovery, load, verification, rename.
    for i, delay in enumerate([0.0, 0.05, 0.15, 0.3, 0.5, 0.8, 1.2, 1.8, 2.5, 3.5, 5.0, 7.0]):
        folder = tmp_path / f"kill{i}"
        folder.mkdir()
        db = folder / "mlflow.db"
        proc = start(tree, db)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        wait_for_children_to_exit(proc.pid)
        if db.exists():
            check = run_cli("verify", "--source", str(tree), "--target", f"sqlite:///{db}")
            assert check.returncode == 0, f"kill after {delay}s left a target that does not verify"
            outcomes.append("complete")
        else:
            outcomes.append("absent")
    assert "absent" in outcomes  # the early kills did land mid-run
    # The next run on a folder a killed run left behind removes its staging file and succeeds.
    leftover = next(tmp_path / f"kill{i}" for i, o in enumerate(outcomes)
                    if o == "absent" and staging_files(tmp_path / f"kill{i}"))
    again = run_cli("--source", str(tree), "--target", f"sqlite:///{leftover}/mlflow.db", "-q")
    assert again.returncode == 0, again.stderr
    assert staging_files(leftover) == []
    assert tree_fingerprint(tree) == before


@posix_only("SIGTERM and SIGINT sent to another process; " + FIND_CHILDREN)
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_cleanly(tree, tmp_path, sig, code):
    db = tmp_path / "mlflow.db"
    proc = start(tree, db)
    deadline = time.monotonic() + 60
    while not staging_files(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "the target was not touched" in err
    assert not db.exists()
    assert staging_files(tmp_path) == []
    wait_for_children_to_exit(proc.pid)


# A run whose unwinding hangs after the signal: the stop grace cut to a second, the body
# deaf to the interrupt, as a thread that holds the run up (MLflow being imported on a loaded
# machine) makes it.
HUNG_UNWINDING = """
import sys, time
import etl.cli as cli
cli.STOP_GRACE_SECONDS = 1
def body():
    try:
        print("running", flush=True)
        time.sleep(60)
    except KeyboardInterrupt:
        time.sleep(60)
sys.exit(cli._guarded({"command": sys.argv[1]}, body))
"""


@posix_only("SIGTERM and SIGINT sent to another process")
@pytest.mark.parametrize("sig, code, said", [(signal.SIGTERM, 143, "terminated: the staging file was removed"),
                                              (signal.SIGINT, 130, "interrupted: the staging file was removed")])
def test_a_stop_whose_unwinding_hangs_still_says_how_the_run_ended(sig, code, said):
    proc = subprocess.Popen([sys.executable, "-c", HUNG_UNWINDING, "migrate"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "running\n"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert err.count(said) == 1, err


@posix_only("a process group signalled with os.killpg")
def test_ctrl_c_in_a_terminal_reaches_workers_too(tree, tmp_path):
    """A terminal's Ctrl-C goes to the whole process group, worker processes included."""
    db = tmp_path / "mlflow.db"
    proc = start(tree, db, start_new_session=True)
    deadline = time.monotonic() + 60
    while not staging_files(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert not db.exists() and staging_files(tmp_path) == []


@pytest.mark.skipif(os.name != "nt", reason="Ctrl-Break (CTRL_BREAK_EVENT) exists only on Windows")
def test_ctrl_break_stops_cleanly_on_windows(tree, tmp_path):
    """Windows' polite stop for a console program: Ctrl-Break, sent here to the CLI's own
    process group (its workers included, as a console would)."""
    db = tmp_path / "mlflow.db"
    proc = start(tree, db, creationflags=subprocess.CREATE_NEW_PROCESS_GROUP)
    deadline = time.monotonic() + 60
    while not staging_files(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)
    proc.send_signal(signal.CTRL_BREAK_EVENT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "the target was not touched" in err
    assert not db.exists() and staging_files(tmp_path) == []


def _file_size_limit(limit: int):
    def apply():
        import resource  # POSIX only: imported in the child, where the limit applies

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write(), not a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@posix_only("a file-size limit (resource.RLIMIT_FSIZE) stands in for a full disk")
def test_full_disk_is_a_clear_error_and_the_target_is_untouched(tree, tmp_path):
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"")  # an empty file may be replaced; it must still be here, empty, after
    proc = start(tree, db, preexec_fn=_file_size_limit(3 * 1024 * 1024))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 4, err
    assert f"writing the staging database {tmp_path}/.mlflow.db.staging-" in err
    assert "is the disk full, or a file-size limit reached?" in err
    assert db.read_bytes() == b""
    assert staging_files(tmp_path) == []


@posix_only("os.mkfifo makes the named pipe")
def test_a_named_pipe_in_the_tree_is_an_error_not_a_hang(tree, tmp_path):
    import shutil

    copy = tmp_path / "mlruns"
    shutil.copytree(tree, copy)
    run_dir = next(p.parent for p in sorted(copy.glob("[1-9]*/*/meta.yaml")))
    fifo = run_dir / "params" / "pipe"
    os.mkfifo(fifo)
    result = run_cli("--source", str(copy), "--target", f"sqlite:///{tmp_path}/mlflow.db", timeout=120)
    assert result.returncode == 3
    assert f"{fifo}: not a regular file" in result.stderr


@posix_only("SIGKILL to a worker; " + FIND_CHILDREN)
def test_a_worker_process_dying_stops_the_run_promptly(tree, tmp_path):
    """A producer failing (here: its process killed, as the OOM killer would) ends the whole
    run: no hang, no orphaned tasks, exit status 4, target untouched, staging removed."""
    db = tmp_path / "mlflow.db"
    proc = start(tree, db)
    deadline = time.monotonic() + 60
    workers = []
    while not workers and time.monotonic() < deadline:
        workers = children(proc.pid)
        time.sleep(0.02)
    assert workers, "no worker process appeared"
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 4, err
    assert "the target was not touched" in err
    assert not db.exists() and staging_files(tmp_path) == []
    wait_for_children_to_exit(proc.pid)
