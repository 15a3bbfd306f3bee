"""Verification gates the rename: a source that changes under a migration is caught, the target
is left as it was, and --keep-failed keeps the staging database for inspection."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli


@pytest.fixture
def tree(tmp_path) -> Path:
    mlruns = tmp_path / "src" / "mlruns"
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_large_tree.py"), "--output", str(mlruns),
         "--shape", "metric-heavy", "--runs", "60"],
        check=True, capture_output=True, timeout=300,
    )
    return mlruns


def keep_logging(metric_file: Path, stop: threading.Event) -> None:
    """Someone still logging to the file store while it is migrated: one point every 5 ms."""
    step = 10_000
    while not stop.is_set():
        with open(metric_file, "a") as f:
            f.write(f"1700000000000 0.5 {step}\n")
        step += 1
        time.sleep(0.005)


@pytest.mark.parametrize("keep", [False, True])
def test_a_source_changing_during_the_run_fails_verification(tree, tmp_path, keep):
    metric_file = next(p for p in sorted(tree.glob("[1-9]*/*/metrics/*")) if p.is_file())
    target = tmp_path / "out"
    target.mkdir()
    (target / "mlflow.db").write_bytes(b"")  # empty: would be replaced on success
    stop = threading.Event()
    writer = threading.Thread(target=keep_logging, args=(metric_file, stop))
    writer.start()
    try:
        args = ["--source", str(tree), "--target", f"sqlite:///{target}/mlflow.db"]
        result = run_cli(*args, *(["--keep-failed"] if keep else []))
    finally:
        stop.set()
        writer.join()
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "FAILED: metric series" in result.stderr and metric_file.name in result.stderr
    assert (target / "mlflow.db").read_bytes() == b""
    kept = [p for p in target.iterdir() if ".staging-" in p.name]
    if keep:
        assert len(kept) == 1 and str(kept[0]) in result.stderr
    else:
        assert kept == []
