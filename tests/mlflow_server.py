"""A real `mlflow server` on a SQLite file or a PostgreSQL URI, on a free loopback port, as a
user starts one."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

HEALTH_TIMEOUT = 120  # s; the server imports for ~10-40 s on 2 busy cores
STOP_TIMEOUT = 15  # s between SIGTERM and SIGKILL


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_command() -> list[str]:
    exe = Path(sys.executable).with_name("mlflow")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mlflow"]


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's own process group (it spawns uvicorn), SIGKILL after a timeout."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_TIMEOUT)
    # Children may outlive the parent: the group id is the server's pid (start_new_session).
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=STOP_TIMEOUT)


def start(db: Path | str, root: Path) -> tuple[subprocess.Popen, str, Path]:
    """Start `mlflow server` on db, a SQLite file or a backend store URI (artifacts and log under
    root); return once it is healthy."""
    artifacts = root / "artifacts"
    artifacts.mkdir(exist_ok=True)
    log_path = root / "server.log"
    env = dict(os.environ)
    env.update(
        # The job runner spawns ~7 huey consumers that survive the server's SIGTERM and leave a
        # folder in /dev/shm; it only runs background jobs, nothing these tests read.
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true",
    )
    port = free_port()
    cmd = [
        *mlflow_command(), "server",
        "--backend-store-uri", db if isinstance(db, str) else f"sqlite:///{db}",
        "--default-artifact-root", str(artifacts),
        "--artifacts-destination", str(artifacts),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root, env=env,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(proc, url, log_path)
    return proc, url, log_path


def wait_healthy(proc: subprocess.Popen, url: str, log_path: Path, timeout: float = HEALTH_TIMEOUT) -> None:
    """Return once the server at url answers /health; stop it and fail if it exits or never does."""
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not healthy after {timeout}s:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.5)
    except BaseException:
        stop(proc)
        raise
